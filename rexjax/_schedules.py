r"""Noise schedules: $x_t = \alpha(t) x_0 + \sigma(t) \epsilon$ on a diffusion time $t$.

Every schedule gives $\log\alpha$, $\log\sigma$, the log signal-to-noise ratio
$\lambda(t) = \log(\alpha/\sigma)$ (strictly decreasing in $t$) and its inverse $t(\lambda)$, which
the exponential (Lawson) solvers need to place their stage times. Inverses are closed-form where
one exists and a fixed-iteration (jit-safe) bisection otherwise.
"""

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._custom_types import RealScalarLike


def _softplus(x):
    return jnp.logaddexp(x, 0.0)


class AbstractSchedule(eqx.Module):
    r"""A noise schedule $(\alpha(t), \sigma(t))$ on the domain $t \in [t_{\min}, t_{\max}]$.

    Subclasses give `log_alpha`, `log_sigma` and `t_from_log_snr`; the rest is derived.
    """

    t_min: eqx.AbstractVar[float]
    t_max: eqx.AbstractVar[float]

    @abc.abstractmethod
    def log_alpha(self, t: RealScalarLike) -> Array:
        r"""$\log\alpha(t)$."""

    @abc.abstractmethod
    def log_sigma(self, t: RealScalarLike) -> Array:
        r"""$\log\sigma(t)$."""

    @abc.abstractmethod
    def t_from_log_snr(self, lam: RealScalarLike) -> Array:
        r"""The inverse of `log_snr`: the time $t$ with $\lambda(t) = $ `lam`."""

    def alpha(self, t: RealScalarLike) -> Array:
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t: RealScalarLike) -> Array:
        return jnp.exp(self.log_sigma(t))

    def log_snr(self, t: RealScalarLike) -> Array:
        r"""$\lambda(t) = \log\alpha(t) - \log\sigma(t)$, strictly decreasing in $t$."""
        return self.log_alpha(t) - self.log_sigma(t)

    def derivatives(self, t: RealScalarLike) -> tuple[Array, Array]:
        r"""$(\dot\alpha(t), \dot\sigma(t))$, by forward-mode autodiff of the schedule."""
        t = jnp.asarray(t)
        one = jnp.ones_like(t)
        alpha, dalpha = jax.jvp(self.alpha, (t,), (one,))
        sigma, dsigma = jax.jvp(self.sigma, (t,), (one,))
        del alpha, sigma
        return dalpha, dsigma

    def _check_domain(self):
        if not (np.isfinite(self.t_min) and np.isfinite(self.t_max) and self.t_min < self.t_max):
            raise ValueError(
                f"The schedule's domain must be a finite interval t_min < t_max; got "
                f"[{self.t_min}, {self.t_max}]."
            )
        # Check that the log-SNR is strictly decreasing on the domain (sampled densely).
        ts = np.linspace(self.t_min, self.t_max, 513)[1:-1]
        with jax.ensure_compile_time_eval():
            lam = np.asarray(jax.vmap(self.log_snr)(jnp.asarray(ts)))
        if not np.all(np.isfinite(lam)):
            bad = ts[~np.isfinite(lam)][0]
            raise ValueError(
                f"log_snr is not finite inside the schedule's domain (at t={bad:.6g}); check "
                "that alpha(t) > 0 and sigma(t) > 0 on (t_min, t_max)."
            )
        if not np.all(np.diff(lam) < 0):
            bad = ts[1:][np.diff(lam) >= 0][0]
            raise ValueError(
                "log_snr(t) = log(alpha/sigma) must be strictly decreasing in t (noise grows "
                f"with time), but it does not decrease near t={bad:.6g}."
            )


class VPSchedule(AbstractSchedule):
    r"""Variance-preserving schedules, $\alpha(t)^2 + \sigma(t)^2 = 1$.

    Subclasses give $\log\alpha(t)$ and its inverse; $\sigma = \sqrt{1 - \alpha^2}$ and
    $t(\lambda)$ follow from $\log\alpha = -\tfrac12\log(1 + e^{-2\lambda})$.

    Build one with the constructors `VPSchedule.linear`, `VPSchedule.scaled_linear`,
    `VPSchedule.discrete` and `VPSchedule.cosine`.
    """

    @abc.abstractmethod
    def t_from_log_alpha(self, log_alpha: RealScalarLike) -> Array:
        r"""The inverse of `log_alpha` (which is strictly decreasing)."""

    def log_sigma(self, t):
        return 0.5 * jnp.log(-jnp.expm1(2 * self.log_alpha(t)))

    def t_from_log_snr(self, lam):
        return self.t_from_log_alpha(-0.5 * _softplus(-2 * jnp.asarray(lam)))

    @staticmethod
    def linear(beta_min: float = 0.1, beta_max: float = 20.0) -> "LinearVPSchedule":
        r"""Continuous-time DDPM (Song et al. 2021): $\beta(t) = \beta_{\min} + (\beta_{\max} -
        \beta_{\min}) t$. A diffusers DDPM with `beta_start`, `beta_end` and $N$ training steps
        has $\beta_{\min} = N\,$`beta_start`, $\beta_{\max} = N\,$`beta_end`."""
        return LinearVPSchedule(beta_min=beta_min, beta_max=beta_max)

    @staticmethod
    def scaled_linear(
        beta_start: float = 0.00085, beta_end: float = 0.012, num_train_timesteps: int = 1000
    ) -> "ScaledLinearVPSchedule":
        r"""Continuous version of diffusers' "scaled_linear" betas (Stable Diffusion):
        $\beta(t) = N(a + (b - a)t)^2$ with $a = \sqrt{\text{beta\_start}}$,
        $b = \sqrt{\text{beta\_end}}$. Use `VPSchedule.discrete` to match a checkpoint exactly."""
        return ScaledLinearVPSchedule(
            beta_start=beta_start, beta_end=beta_end, num_train_timesteps=num_train_timesteps
        )

    @staticmethod
    def discrete(alphas_cumprod: Float[ArrayLike, " N"]) -> "DiscreteVPSchedule":
        r"""diffusers' `alphas_cumprod`, with $\log\alpha$ piecewise linear in $t$ through
        $t_n = (n+1)/N$ (as DPM-Solver's `NoiseScheduleVP('discrete')`). Domain $[1/N, 1]$."""
        return DiscreteVPSchedule(alphas_cumprod)

    @staticmethod
    def cosine(s: float = 0.008, t_max: float = 0.9946) -> "CosineVPSchedule":
        r"""The cosine schedule of improved DDPM (Nichol & Dhariwal 2021),
        $\alpha(t) = \cos(\tfrac{\pi}{2}\tfrac{t + s}{1 + s}) / \cos(\tfrac{\pi}{2}\tfrac{s}{1+s})$,
        on $[0, t_{\max}]$ ($\alpha \to 0$ at $t = 1$; DPM-Solver stops at 0.9946)."""
        return CosineVPSchedule(s=s, t_max=t_max)


class LinearVPSchedule(VPSchedule):
    r"""$\log\alpha(t) = -\tfrac14(\beta_{\max}-\beta_{\min})t^2 - \tfrac12\beta_{\min}t$."""

    beta_min: float
    beta_max: float
    t_min: float = 0.0
    t_max: float = 1.0

    def __check_init__(self):
        if not 0 <= self.beta_min < self.beta_max:
            raise ValueError(
                f"Need 0 <= beta_min < beta_max; got beta_min={self.beta_min}, "
                f"beta_max={self.beta_max}."
            )
        self._check_domain()

    def log_alpha(self, t):
        t = jnp.asarray(t)
        return -0.25 * (self.beta_max - self.beta_min) * t**2 - 0.5 * self.beta_min * t

    def t_from_log_alpha(self, log_alpha):
        # Solve (bmax-bmin) t^2 / 2 + bmin t - s = 0 for s = -2 log_alpha, in the cancellation-free
        # form t = 2s / (bmin + sqrt(bmin^2 + 2 (bmax-bmin) s)).
        s = -2 * jnp.asarray(log_alpha)
        d = self.beta_max - self.beta_min
        return 2 * s / (self.beta_min + jnp.sqrt(self.beta_min**2 + 2 * d * s))


class ScaledLinearVPSchedule(VPSchedule):
    r"""$\log\alpha(t) = -N\,((a + (b-a)t)^3 - a^3) / (6(b-a))$, $a, b$ the square roots of the
    betas; inverted with a cube root written without cancellation."""

    beta_start: float
    beta_end: float
    num_train_timesteps: int = 1000
    t_min: float = 0.0
    t_max: float = 1.0

    def __check_init__(self):
        if not 0 <= self.beta_start < self.beta_end < 1:
            raise ValueError(
                f"Need 0 <= beta_start < beta_end < 1; got beta_start={self.beta_start}, "
                f"beta_end={self.beta_end}."
            )
        if self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be >= 2; got {self.num_train_timesteps}.")
        self._check_domain()

    def _ab(self):
        return float(np.sqrt(self.beta_start)), float(np.sqrt(self.beta_end))

    def log_alpha(self, t):
        a, b = self._ab()
        t = jnp.asarray(t)
        # ((a + (b-a)t)^3 - a^3) / (b-a) expanded: no cancellation at small t.
        d = b - a
        cubic = 3 * a**2 * t + 3 * a * d * t**2 + d**2 * t**3
        return -self.num_train_timesteps * cubic / 6

    def t_from_log_alpha(self, log_alpha):
        a, b = self._ab()
        n = self.num_train_timesteps
        u = -6 * (b - a) * jnp.asarray(log_alpha) / (n * a**3)
        return a * jnp.expm1(jnp.log1p(u) / 3) / (b - a)


class DiscreteVPSchedule(VPSchedule):
    r"""A trained checkpoint's `alphas_cumprod` $\bar\alpha_n$, $n = 0..N-1$: $\log\alpha$ is
    the piecewise-linear interpolant of $\tfrac12\log\bar\alpha_n$ at $t_n = (n+1)/N$.

    Model time convention: continuous $t$ corresponds to the discrete timestep $tN - 1$.
    """

    log_alphas: Float[np.ndarray, " N"]
    t_min: float = eqx.field(static=True)
    t_max: float = eqx.field(static=True)

    def __init__(self, alphas_cumprod: Float[ArrayLike, " N"]):
        ac = np.asarray(alphas_cumprod, dtype=np.float64)
        if ac.ndim != 1 or ac.shape[0] < 2:
            raise ValueError(f"alphas_cumprod must be 1-D with >= 2 entries; got shape {ac.shape}.")
        if not (np.all(ac > 0) and np.all(ac < 1)):
            raise ValueError("alphas_cumprod must lie strictly inside (0, 1).")
        if not np.all(np.diff(ac) < 0):
            raise ValueError("alphas_cumprod must be strictly decreasing.")
        n = ac.shape[0]
        self.log_alphas = 0.5 * np.log(ac)
        self.t_min = 1.0 / n
        self.t_max = 1.0

    def __check_init__(self):
        self._check_domain()

    @property
    def num_train_timesteps(self) -> int:
        return self.log_alphas.shape[0]

    def _knots(self, dtype):
        n = self.num_train_timesteps
        ts = jnp.asarray(np.arange(1, n + 1) / n, dtype=dtype)
        return ts, jnp.asarray(self.log_alphas, dtype=dtype)

    def log_alpha(self, t):
        t = jnp.asarray(t)
        ts, las = self._knots(jnp.result_type(t, float))
        return jnp.interp(t, ts, las)

    def t_from_log_alpha(self, log_alpha):
        log_alpha = jnp.asarray(log_alpha)
        ts, las = self._knots(jnp.result_type(log_alpha, float))
        return jnp.interp(log_alpha, las[::-1], ts[::-1])


class CosineVPSchedule(VPSchedule):
    r"""$\alpha(t) = \cos(\tfrac{\pi}{2}\tfrac{t+s}{1+s}) / \cos(\tfrac{\pi}{2}\tfrac{s}{1+s})$."""

    s: float = 0.008
    t_min: float = 0.0
    t_max: float = 0.9946

    def __check_init__(self):
        if not self.s > 0:
            raise ValueError(f"s must be positive; got {self.s}.")
        if not 0 < self.t_max < 1:
            raise ValueError(f"t_max must lie in (0, 1) (alpha vanishes at t=1); got {self.t_max}.")
        self._check_domain()

    def _theta0(self) -> float:
        return 0.5 * np.pi * self.s / (1 + self.s)

    def log_alpha(self, t):
        # With theta = theta0 + d, d = (pi/2) t/(1+s): cos(theta)/cos(theta0) =
        # 1 - 2 sin^2(d/2) - tan(theta0) sin(d), free of cancellation at small t.
        d = 0.5 * jnp.pi * jnp.asarray(t) / (1 + self.s)
        return jnp.log1p(-2 * jnp.sin(0.5 * d) ** 2 - np.tan(self._theta0()) * jnp.sin(d))

    def t_from_log_alpha(self, log_alpha):
        # cos(theta0 + d) = c = alpha cos(theta0) gives, without cancellation,
        # sin(d) = cos(theta0) (1 - alpha^2) / (sqrt(1 - c^2) + alpha sin(theta0)).
        la = jnp.asarray(log_alpha)
        alpha, th0 = jnp.exp(la), self._theta0()
        c = alpha * np.cos(th0)
        sin_d = np.cos(th0) * -jnp.expm1(2 * la) / (jnp.sqrt(1 - c**2) + alpha * np.sin(th0))
        return 2 * (1 + self.s) / jnp.pi * jnp.arcsin(sin_d)


class FlowMatchingSchedule(AbstractSchedule):
    r"""Rectified flow / flow matching: $\alpha(t) = 1 - t$, $\sigma(t) = t$ on $[0, 1]$;
    $t(\lambda) = 1 / (1 + e^{\lambda})$."""

    t_min: float = 0.0
    t_max: float = 1.0

    def __check_init__(self):
        if not 0 <= self.t_min < self.t_max <= 1:
            raise ValueError(f"Need 0 <= t_min < t_max <= 1; got [{self.t_min}, {self.t_max}].")
        self._check_domain()

    def log_alpha(self, t):
        return jnp.log1p(-jnp.asarray(t))

    def log_sigma(self, t):
        return jnp.log(jnp.asarray(t))

    def t_from_log_snr(self, lam):
        return jax.nn.sigmoid(-jnp.asarray(lam))

    # Closed forms: through exp(log(1 - t)) the derivative at t = 1 would be 0 * inf = NaN,
    # and t = 1 (pure noise, sigma = 1) is where data-prediction sampling starts.
    def alpha(self, t):
        return 1 - jnp.asarray(t)

    def sigma(self, t):
        return jnp.asarray(t)

    def derivatives(self, t):
        t = jnp.asarray(t)
        return -jnp.ones_like(t), jnp.ones_like(t)


class CustomSchedule(AbstractSchedule):
    r"""Any user schedule: callables `alpha(t)` and `sigma(t)` (positive on the open domain,
    with $\log(\alpha/\sigma)$ strictly decreasing). $t(\lambda)$ is computed by bisection with
    a fixed number of iterations (jit- and vmap-safe), to the last bit in float64.

    **Arguments:**

    - `alpha`, `sigma`: callables of a scalar time returning a scalar.
    - `t_min`, `t_max`: the domain.
    - `t_from_log_snr`: optional closed-form inverse; bisection is used when it is `None`.
    """

    alpha_fn: Callable
    sigma_fn: Callable
    t_min: float = 0.0
    t_max: float = 1.0
    inverse_fn: Callable | None = None
    num_bisections: int = eqx.field(static=True, default=96)

    def __check_init__(self):
        self._check_domain()

    def log_alpha(self, t):
        return jnp.log(self.alpha_fn(jnp.asarray(t)))

    def log_sigma(self, t):
        return jnp.log(self.sigma_fn(jnp.asarray(t)))

    def alpha(self, t):
        return self.alpha_fn(jnp.asarray(t))

    def sigma(self, t):
        return self.sigma_fn(jnp.asarray(t))

    def t_from_log_snr(self, lam):
        if self.inverse_fn is not None:
            return self.inverse_fn(lam)
        lam = jnp.asarray(lam)
        dtype = jnp.result_type(lam, float)
        lo = jnp.full_like(lam, self.t_min, dtype=dtype)
        hi = jnp.full_like(lam, self.t_max, dtype=dtype)

        def bisect(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            go_right = self.log_snr(mid) > lam  # log_snr decreases: the root lies to the right
            return jnp.where(go_right, mid, lo), jnp.where(go_right, hi, mid)

        lo, hi = jax.lax.fori_loop(0, self.num_bisections, bisect, (lo, hi))
        return 0.5 * (lo + hi)
