"""The dtypes the ported models run in."""

from typing import Any

import jax
import jax.numpy as jnp


_SUPPORTED = ("float32", "bfloat16", "float16", "float64")


def check_dtype(dtype: Any) -> jnp.dtype:
    """`dtype` as a numpy dtype; float32, bfloat16, float16 and float64 are accepted.

    float64 (for round-off studies of the solvers on a real network) needs
    `jax.config.update("jax_enable_x64", True)`. Like diffusers, the sinusoidal timestep
    features are computed in float32 whatever the dtype.

    **Raises:**

    `ValueError` for any other dtype, or float64 without x64.
    """
    name = jnp.dtype(dtype).name
    if name not in _SUPPORTED:
        raise ValueError(f"dtype={name} is not supported; use one of {list(_SUPPORTED)}.")
    if name == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype=float64 needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
            "before building the model (otherwise its arrays would silently be float32)."
        )
    return jnp.dtype(dtype)
