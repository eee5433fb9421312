r"""Shared pieces of the baseline samplers: the DDIM map and small pytree arithmetic.

All baselines are written with the DDIM map from $(t, x)$ to $t'$ given a noise prediction
$\epsilon$:

$D(x, \epsilon; t \to t') = \alpha' (x - \sigma\epsilon)/\alpha + \sigma'\epsilon
= a x + b\epsilon$,

$a = \alpha'/\alpha$, $b = \alpha'(\bar\sigma' - \bar\sigma)$ with $\bar\sigma = \sigma/\alpha =
e^{-\lambda}$. Both coefficients are computed from logarithms (and `expm1` for the difference),
so they carry no cancellation when $t' \approx t$.
"""

import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array

from .._custom_types import RealScalarLike, Y
from .._schedules import AbstractSchedule


def ddim_coefficients(
    schedule: AbstractSchedule, t: RealScalarLike, t_new: RealScalarLike
) -> tuple[Array, Array]:
    r"""`(a, b)` with $D(x, \epsilon; t \to t') = a x + b\epsilon$ (see the module docstring)."""
    log_alpha, log_alpha_new = schedule.log_alpha(t), schedule.log_alpha(t_new)
    lam, lam_new = schedule.log_snr(t), schedule.log_snr(t_new)
    a = jnp.exp(log_alpha_new - log_alpha)
    b = jnp.exp(log_alpha_new - lam) * jnp.expm1(lam - lam_new)
    return a, b


def sigma_bar_step(schedule: AbstractSchedule, t: RealScalarLike, t_new: RealScalarLike) -> Array:
    r"""$\bar\sigma(t') - \bar\sigma(t)$ with $\bar\sigma = e^{-\lambda}$, without cancellation."""
    lam, lam_new = schedule.log_snr(t), schedule.log_snr(t_new)
    return jnp.exp(-lam) * jnp.expm1(lam - lam_new)


def comb(*pairs) -> Y:
    r"""The pytree $\sum_k c_k y_k$ for pairs `(c_k, y_k)` of scalars and pytrees (each scalar
    cast to the leaf dtype)."""
    (c0, y0), rest = pairs[0], pairs[1:]
    out = jtu.tree_map(lambda x: jnp.asarray(c0).astype(x.dtype) * x, y0)
    for c, y in rest:
        out = jtu.tree_map(lambda o, x, c=c: o + jnp.asarray(c).astype(x.dtype) * x, out, y)
    return out


def zeros_like(tree: Y) -> Y:
    return jtu.tree_map(jnp.zeros_like, tree)
