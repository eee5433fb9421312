"""Linear combinations of pytrees with scalar coefficients (cast to each leaf's dtype, so a
float64 coefficient never promotes a float32 state)."""

import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array

from ._custom_types import Y


def scale(a: Array, tree: Y) -> Y:
    """The pytree `a * tree`."""
    return jtu.tree_map(lambda x: a.astype(x.dtype) * x, tree)


def add(x: Y, y: Y) -> Y:
    """The pytree `x + y`."""
    return jtu.tree_map(jnp.add, x, y)


def lin(a: Array, x: Y, b: Array, y: Y) -> Y:
    """The pytree `a x + b y`."""
    return jtu.tree_map(lambda xi, yi: a.astype(xi.dtype) * xi + b.astype(yi.dtype) * yi, x, y)
