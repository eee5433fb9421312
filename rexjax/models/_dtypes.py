"""The dtypes the ported models run in."""

from typing import Any

import jax.numpy as jnp


_SUPPORTED = ("float32", "bfloat16", "float16")


def check_dtype(dtype: Any) -> jnp.dtype:
    """`dtype` as a numpy dtype; only float32, bfloat16 and float16 are accepted.

    **Raises:**

    `ValueError` for any other dtype.
    """
    name = jnp.dtype(dtype).name
    if name not in _SUPPORTED:
        raise ValueError(f"dtype={name} is not supported; use one of {list(_SUPPORTED)}.")
    return jnp.dtype(dtype)
