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


# Run the longest modules first: with two xdist workers (`-n 2 --dist worksteal`), a module of
# one or two minutes collected last keeps one worker busy while the other sits idle.
_LONG_MODULES = (
    "test_notebook_digits.py",
    "test_demo_digits.py",
    "test_sharding.py",
    "test_notebook_boltzmann.py",
)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.path.name not in _LONG_MODULES)  # stable: modules stay whole
