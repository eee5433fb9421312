r"""`DiffusionTerm`: a diffusion model, its schedule and its parameterisation, as a diffrax term."""

from collections.abc import Callable
from typing import Literal, get_args

import diffrax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array

from ._custom_types import Args, RealScalarLike, Y
from ._schedules import AbstractSchedule
from ._tree import lin as _lin


ModelType = Literal["noise", "data", "velocity", "flow"]
_MODEL_TYPES = get_args(ModelType)


class DiffusionTerm(diffrax.AbstractTerm):
    r"""A diffusion model as a diffrax term for the probability-flow ODE.

    The forward process is $x_t = \alpha(t) x_0 + \sigma(t)\epsilon$. The model predicts one of

    - `"noise"`: $\hat\epsilon(t, x)$;
    - `"data"`: $\hat x_0(t, x)$;
    - `"velocity"`: diffusers' v-prediction $\hat v = \alpha\hat\epsilon - \sigma\hat x_0$;
    - `"flow"`: the flow-matching velocity $\hat u = \dot\alpha\hat x_0 + \dot\sigma\hat\epsilon$.

    `vf(t, x, args)` is the true probability-flow drift
    $\mathrm{d}x/\mathrm{d}t = \dot\alpha(t)\hat x_0 + \dot\sigma(t)\hat\epsilon$, so any diffrax
    ODE solver integrates this term. The Rex and Princeps solvers instead use its semi-linear
    split through `data` / `noise` (the two predictions, converted exactly).

    **Arguments:**

    - `model`: a callable `model(t, x, args)` with `t` a scalar diffusion time in the
        schedule's domain. Parameters to differentiate should live in an `equinox.Module`
        model or in `args` (closed-over arrays are constants to JAX's autodiff).
    - `schedule`: an `AbstractSchedule`.
    - `model_type`: which quantity the model predicts (see above).
    """

    model: Callable
    schedule: AbstractSchedule
    model_type: ModelType

    def __check_init__(self):
        if self.model_type not in _MODEL_TYPES:
            raise ValueError(
                f"Unknown model_type {self.model_type!r}; expected one of {_MODEL_TYPES} "
                "(diffusers' 'epsilon' is 'noise', 'sample' is 'data', 'v_prediction' is "
                "'velocity')."
            )
        if not isinstance(self.schedule, AbstractSchedule):
            raise ValueError(
                f"schedule must be a rexjax schedule (e.g. rexjax.VPSchedule.linear()); got "
                f"{type(self.schedule).__name__}."
            )
        if not callable(self.model):
            raise ValueError("model must be callable as model(t, x, args).")

    def _prediction(self, t, y, args, want: Literal["data", "noise"]) -> Y:
        out = self.model(t, y, args)
        if self.model_type == want:
            return out
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        if self.model_type in ("noise", "data"):
            # x = alpha x0 + sigma eps, solved for the other one.
            if want == "data":  # from noise
                return _lin(1 / alpha, y, -sigma / alpha, out)
            return _lin(1 / sigma, y, -alpha / sigma, out)
        if self.model_type == "velocity":
            # [x; v] = [[alpha, sigma], [-sigma, alpha]] [x0; eps].
            det = alpha**2 + sigma**2
            if want == "data":
                return _lin(alpha / det, y, -sigma / det, out)
            return _lin(sigma / det, y, alpha / det, out)
        # "flow": [x; u] = [[alpha, sigma], [alpha', sigma']] [x0; eps].
        dalpha, dsigma = self.schedule.derivatives(t)
        det = alpha * dsigma - sigma * dalpha
        if want == "data":
            return _lin(dsigma / det, y, -sigma / det, out)
        return _lin(-dalpha / det, y, alpha / det, out)

    def data(self, t: RealScalarLike, y: Y, args: Args) -> Y:
        r"""The data prediction $\hat x_0(t, y)$."""
        return self._prediction(t, y, args, "data")

    def noise(self, t: RealScalarLike, y: Y, args: Args) -> Y:
        r"""The noise prediction $\hat\epsilon(t, y)$."""
        return self._prediction(t, y, args, "noise")

    def vf(self, t: RealScalarLike, y: Y, args: Args) -> Y:
        if self.model_type == "flow":
            return self.model(t, y, args)
        dalpha, dsigma = self.schedule.derivatives(t)
        if self.model_type == "noise":
            # x0 = (x - sigma eps)/alpha: dx/dt = (a'/a) x + (s' - a' s/a) eps (a=alpha, s=sigma)
            alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
            eps = self.model(t, y, args)
            return _lin(dalpha / alpha, y, dsigma - dalpha * sigma / alpha, eps)
        x0 = self.data(t, y, args)
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        # eps = (x - alpha x0)/sigma: dx/dt = (sigma'/sigma) x + (alpha' - sigma' alpha/sigma) x0
        return _lin(dsigma / sigma, y, dalpha - dsigma * alpha / sigma, x0)

    def contr(self, t0: RealScalarLike, t1: RealScalarLike, **kwargs) -> Array:
        return jnp.asarray(t1) - jnp.asarray(t0)

    def prod(self, vf: Y, control: Array) -> Y:
        return jtu.tree_map(lambda v: control.astype(v.dtype) * v, vf)
