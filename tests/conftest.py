"""Strict test configuration (as diffrax's): float64 available, no implicit rank promotion.

float64 is enabled globally because orders and floors are measured in it; float32 tests pass
explicit dtypes. Rank promotion raises so that broadcasting bugs surface.
"""

import gc

import jax
import pytest


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    One pytest process compiles thousands of programs; kept alive they grow the process by
    gigabytes until XLA's compiler aborts for lack of memory (seen on a 2-core, 24 GiB CI run).
    """
    yield
    jax.clear_caches()
    gc.collect()
