r"""An analytic diffusion model: Gaussian-mixture data, whose noise and data predictions are
known in closed form for any schedule. Used by the demo, the tests and the benchmarks."""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._custom_types import Args, RealScalarLike
from ._schedules import AbstractSchedule
from ._term import DiffusionTerm


class GaussianMixture(eqx.Module):
    r"""Data $x_0 \sim \sum_k w_k\,\mathcal N(\mu_k, s_k^2 I)$ in $\mathbb R^d$ and its exact
    denoisers under a schedule: given $x_t$, component $k$ has posterior weight
    $\gamma_k \propto w_k\,\mathcal N(x_t; \alpha\mu_k, v_k I)$, $v_k = \alpha^2 s_k^2 + \sigma^2$,
    and

    $\hat x_0 = \sum_k \gamma_k(\mu_k + \alpha s_k^2 (x_t - \alpha\mu_k)/v_k)$,
    $\hat\epsilon = \sum_k \gamma_k\,\sigma (x_t - \alpha\mu_k)/v_k$

    (both written without cancellation). Called as `model(t, x, args)` it returns its
    `prediction`; `x` has shape `(..., d)`.

    **Arguments:**

    - `means`: `(K, d)`; `stds`: `(K,)`; `weights`: `(K,)` positive, normalised here.
    - `schedule`: the noise schedule.
    - `prediction`: what `__call__` returns, `"noise"` or `"data"`.
    """

    means: Float[Array, "K d"]
    stds: Float[Array, " K"]
    log_weights: Float[Array, " K"]
    schedule: AbstractSchedule
    prediction: Literal["noise", "data"] = "noise"

    def __init__(
        self,
        means: Float[ArrayLike, "K d"],
        stds: Float[ArrayLike, " K"],
        weights: Float[ArrayLike, " K"],
        schedule: AbstractSchedule,
        prediction: Literal["noise", "data"] = "noise",
    ):
        means, stds, weights = (np.asarray(a, dtype=np.float64) for a in (means, stds, weights))
        if means.ndim != 2 or stds.shape != means.shape[:1] or weights.shape != means.shape[:1]:
            raise ValueError(
                f"Need means (K, d), stds (K,), weights (K,); got {means.shape}, {stds.shape}, "
                f"{weights.shape}."
            )
        if not (np.all(stds > 0) and np.all(weights > 0)):
            raise ValueError("stds and weights must be positive.")
        if prediction not in ("noise", "data"):
            raise ValueError(f"prediction must be 'noise' or 'data'; got {prediction!r}.")
        self.means = jnp.asarray(means)
        self.stds = jnp.asarray(stds)
        self.log_weights = jnp.asarray(np.log(weights / weights.sum()))
        self.schedule = schedule
        self.prediction = prediction

    @classmethod
    def default(
        cls, schedule: AbstractSchedule, prediction: Literal["noise", "data"] = "noise"
    ) -> "GaussianMixture":
        """The built-in mixture: 6 well-separated, unequal components in 16 dimensions."""
        rng = np.random.default_rng(0)
        means = rng.normal(size=(6, 16))
        stds = np.array([0.05, 0.1, 0.2, 0.3, 0.15, 0.08])
        weights = np.array([0.3, 0.2, 0.15, 0.15, 0.1, 0.1])
        return cls(means, stds, weights, schedule, prediction)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def term(self) -> DiffusionTerm:
        """This model as a `DiffusionTerm` of its own prediction type."""
        return DiffusionTerm(self, self.schedule, self.prediction)

    def _posterior(self, t, x):
        """Per-component terms, broadcast explicitly to x's shape (..., K, d)."""
        dtype = x.dtype
        alpha = self.schedule.alpha(t).astype(dtype)
        sigma = self.schedule.sigma(t).astype(dtype)
        lead = (1,) * (x.ndim - 1)
        means = self.means.astype(dtype).reshape(lead + self.means.shape)  # (1.., K, d)
        s2 = (self.stds**2).astype(dtype).reshape(lead + (-1, 1))  # (1.., K, 1)
        v = alpha**2 * s2 + sigma**2  # (1.., K, 1)
        diff = x[..., None, :] - alpha * means  # (..., K, d)
        logits = (
            self.log_weights.astype(dtype).reshape(lead + (-1,))
            - 0.5 * jnp.sum(diff**2, axis=-1) / v[..., 0]
            - 0.5 * self.dim * jnp.log(v[..., 0])
        )
        gamma = jax.nn.softmax(logits, axis=-1)[..., None]  # (..., K, 1)
        return alpha, sigma, means, s2, v, diff, gamma

    def data(self, t: RealScalarLike, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        alpha, _, means, s2, v, diff, gamma = self._posterior(t, x)
        return jnp.sum(gamma * (means + alpha * s2 * diff / v), axis=-2)

    def noise(self, t: RealScalarLike, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        _, sigma, _, _, v, diff, gamma = self._posterior(t, x)
        return jnp.sum(gamma * sigma * diff / v, axis=-2)

    def __call__(self, t: RealScalarLike, x: Float[Array, "... d"], args: Args = None):
        return self.noise(t, x) if self.prediction == "noise" else self.data(t, x)

    def sample_data(self, key: PRNGKeyArray, num: int, dtype=None) -> Float[Array, "num d"]:
        """Exact samples of $x_0$."""
        kc, kn = jax.random.split(key)
        comp = jax.random.categorical(kc, self.log_weights, shape=(num,))
        dtype = dtype or self.means.dtype
        noise = jax.random.normal(kn, (num, self.dim), dtype=dtype)
        return (self.means[comp] + self.stds[comp, None] * noise).astype(dtype)
