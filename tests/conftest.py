"""Strict test configuration (as diffrax's): float64 available, no implicit rank promotion.

float64 is enabled globally because orders and floors are measured in it; float32 tests pass
explicit dtypes. Rank promotion raises so that broadcasting bugs surface.
"""

import jax


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
