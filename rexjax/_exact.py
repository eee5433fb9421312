r"""`ExactRex`: the McCallum–Foster coupling at $\zeta = 1$ held in fixed point, so that the
inverse is *bitwise* exact.

In the Lawson variables $Y = x/\kappa$ (see `rexjax.Princeps`) the coupling at $\zeta = 1$ is
purely additive:

$Y_{n+1} = Y_n + Q(\Psi_h(\hat Y_n))$, $\qquad \hat Y_{n+1} = \hat Y_n - Q(\Psi_{-h}(Y_{n+1}))$,

with $\Psi$ the Lawson increment of the base tableau (two evaluations a step, as `rexjax.Rex`)
and $Q$ rounding to the fixed-point grid $2^{-F}\mathbb{Z}$. Both copies are held as integers
$N = Y 2^{F}$ (see "Words"), so each update is an integer addition and its inverse an
integer subtraction:

$\hat N_n = \hat N_{n+1} + [\Psi_{-h}(Y_{n+1})]$, $\qquad N_n = N_{n+1} - [\Psi_h(\hat Y_n)]$,

where $[\cdot]$ rounds $2^F\,\cdot$ to an integer. The inverse is exact as soon as $\Psi$ is
evaluated bit-identically in both directions: the same inputs (the integers are reconstructed
exactly) and the same compiled arithmetic. $\Psi$ is computed between
`jax.lax.optimization_barrier`s so that XLA cannot fuse it differently into the forward and
the backward programs.

**Scale.** One power-of-two scale $2^{-F}$ for the whole grid (a per-step change of scale
would drop or invent low bits, which is not invertible). $F$ is chosen when the state is
initialised from the grid's two end points $t_0, t_1$ so that $|x| \le$ `x_max` at every time
fits in `bits` bits: $2^{F} = 2^{\mathrm{bits}}\kappa_{\min}/x_{\max}$ rounded down to a power
of two, with $\kappa_{\min} = \min(\kappa(t_0), \kappa(t_1))$ ($\kappa$ is monotone in $t$ for
the VP and flow-matching schedules). The resolution in $x$ at time $t$ is then
$\kappa(t)2^{-F}$: finest where $\kappa$ is smallest, coarser by the ratio of the $\kappa$ range
(about $2^7$ for a VP grid from $t = 1$ to $10^{-3}$) at the other end. A grid whose $\kappa$
range leaves fewer than 8 bits of resolution somewhere is refused.

**Words.** float64 states hold $N$ in one `int64` (`bits` = 50 by default). float32 states
hold it in two `int32` limbs, $N = N_1 2^{20} + N_0$ with $0 \le N_0 < 2^{20}$, added and
subtracted with a carry (`bits` = 41 by default): JAX has no `int64` without x64, and one
`int32` word (about 21 useful bits) would leave the grid at the coarse end of the $\kappa$
range coarser than float32's own rounding (a loss of accuracy against `rexjax.Rex` of 2 to 8x
at 50 to 100 steps, measured). With 41 bits the grid is $2^{17}$ times finer than a float32's
24 significant bits at the top of the range, so $Q$ adds no error beyond float32 arithmetic
itself except on increments below $2^{-17}$ of the range. The most significant word keeps at
least 8 bits of headroom: it is checked against $2^{\mathrm{bits}+1}$ (in units of the whole
number) after every update and each increment before its conversion (`eqx.error_if`), so an
overflow is an error, never a wrap-around.

**Floats.** `y` (what diffrax and the user see) is the float view $x = \kappa\,\mathrm{fl}(N
2^{-F})$ of the integer state; the solver state (`ExactState`) holds both integer copies. A
float input is quantised once, when the state is initialised, by a search for an integer whose
view *is* that float (among the 17 grid or half-ulp neighbours of $\mathrm{fl}(x/\kappa)2^F$,
which provably contain one when one exists); when none exists the nearest is taken, within
half a grid step plus one rounding (see `ExactRex.round_to_grid`). So `sample(invert(x)) == x`
bitwise for every `x` the view can produce (every output of the solver; for float32 states
also most floats: 86 % to 99.9 % of random data and noise, measured on the mixture), and
within half a grid step plus one rounding (float32: one ulp of `x`) for any `x`.

**Gradients.** The rounding has the straight-through gradient (the identity): the float copies
carry the derivatives of the unrounded scheme, Rex at $\zeta = 1$, evaluated at the exact
(rounded) states. `rexjax.ReversibleAdjoint` reconstructs every state bit-exactly, so its
gradients equal those of backpropagation through the same forward pass.

??? cite "References"

    McCallum & Foster, "Efficient, accurate and stable gradients for neural ODEs", 2024.
    Dinh, Krueger & Bengio, "NICE: non-linear independent components estimation", 2015
    (additive coupling). Gomez et al., "The reversible residual network", 2017.
"""

from typing import ClassVar, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from diffrax import RESULTS, AbstractTerm, LocalLinearInterpolation
from jaxtyping import Array, Int, PyTree

from ._custom_types import RealScalarLike, Y
from ._lawson import LawsonVariables, Prediction, lawson_increment
from ._reversible import (
    AbstractReversibleSolver,
    _check_prediction,
    _finite,
    _reversed,
    _split_sde,
    _step_noise,
    _strong_order,
    base_tableau,
)
from ._tree import scale as _scale


_MIN_RESOLUTION_BITS = 8


_LIMB_BITS = 20  # bits of the low limb of a two-limb (float32) state
_SEARCH = 8  # the quantiser of float inputs tries 2 * _SEARCH + 1 neighbours


class ExactState(eqx.Module):
    r"""The state of `rexjax.ExactRex`: the two coupled copies as fixed-point integers in the
    Lawson variables ($Y = N 2^{-F}$, $\hat Y = \hat N 2^{-F}$), each leaf with a trailing axis
    of limbs (most significant first: one `int64` for float64 states, two `int32` for float32),
    the float view of $\hat Y$ in $x$ units (the carrier of its gradients) and the exponent
    $F$."""

    n: PyTree[Int[Array, "... limbs"]]
    n_hat: PyTree[Int[Array, "... limbs"]]
    y_hat: Y
    exponent: Int[Array, ""]


class _Word(NamedTuple):
    """How a float dtype's fixed-point numbers are held: the limbs' integer dtype, their
    number and the default (and largest) number of bits."""

    dtype: jnp.dtype
    limbs: int
    bits: int


def _word(dtype) -> _Word:
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float64:
        return _Word(jnp.dtype(jnp.int64), 1, 50)
    if dtype == jnp.float32:
        return _Word(jnp.dtype(jnp.int32), 2, 21 + _LIMB_BITS)
    raise ValueError(f"ExactRex integrates float32 or float64 states; got {dtype}.")


def _to_limbs(r: Array, word: _Word) -> Array:
    """Integer-valued floats `r` (|r| < 2^(bits+1)) as limbs, most significant first. Every
    operation is exact: scaling by powers of two, `floor`, and a subtraction whose result (an
    integer below $2^{20}$) is representable."""
    if word.limbs == 1:
        return r.astype(word.dtype)[..., None]
    top = jnp.floor(jnp.ldexp(r, -_LIMB_BITS))
    low = r - jnp.ldexp(top, _LIMB_BITS)
    return jnp.stack([top.astype(word.dtype), low.astype(word.dtype)], axis=-1)


def _limbs_value(n: Array, down: Array) -> Array:
    r"""$\mathrm{fl}(N 2^{-F})$ from the limbs (each term exact, one rounding in the sum)."""
    dtype = down.dtype
    if n.shape[-1] == 1:
        return n[..., 0].astype(dtype) * down
    return n[..., 0].astype(dtype) * jnp.ldexp(down, _LIMB_BITS) + n[..., 1].astype(dtype) * down


def _carried(n: Array) -> Array:
    """Limb-wise sums or differences (a low limb in $(-2^{21}, 2^{21})$) normalised: the low
    limb back in $[0, 2^{20})$, its carry or borrow (an arithmetic shift, negative for a
    borrow) moved into the top limb."""
    if n.shape[-1] == 1:
        return n
    low = n[..., 1]
    top = n[..., 0] + jnp.right_shift(low, _LIMB_BITS)
    return jnp.stack([top, low & (2**_LIMB_BITS - 1)], axis=-1)


def _add(a: Array, b: Array) -> Array:
    """`a + b` on limbs."""
    return _carried(a + b)


def _subtract(a: Array, b: Array) -> Array:
    """`a - b` on limbs."""
    return _carried(a - b)


def _straight_through(diff: Array, value: Array) -> Array:
    """`value` bitwise, with the derivative of `diff` (`value + 0` is `value` for every value
    that is not -0.0, and integer-valued views are never -0.0)."""
    return value + (diff - jax.lax.stop_gradient(diff))


class ExactRex(AbstractReversibleSolver, diffrax.AbstractStratonovichSolver):
    r"""Rex at coupling $\zeta = 1$ with its state in fixed point: a bitwise-exact inverse.

    $Y_{n+1} = Y_n + Q(\Psi_h(\hat Y_n))$, $\hat Y_{n+1} = \hat Y_n - Q(\Psi_{-h}(Y_{n+1}))$
    in the Lawson variables $Y = x/\kappa$, with both copies held as integers on the grid
    $2^{-F}\mathbb{Z}$ and $Q$ rounding to it (see the module docs of `rexjax._exact` for the
    scale, the word size and the conditions). Used like `rexjax.Rex`: `rexjax.sample`,
    `rexjax.invert` (ODE and, with a key, the reverse SDE), replayed adaptive grids,
    `rexjax.ReversibleAdjoint`. With `diffrax.diffeqsolve` directly, pass
    `solver_state=solver.init(term, t0, t1, y0, args)` (diffrax initialises solvers with the
    first step only, which does not fix the scale of the whole solve).

    The guarantee: for inputs on the grid (`round_to_grid`), `sample(invert(x)) == x` and
    `invert(sample(z)).y == z` bitwise; for any float input, within half a grid step
    (`grid_step`). It holds when both directions run the same compiled kernels on the same
    device (see the README, "Bit-exact inversion").

    Use an effectively symmetric base (`rexjax.EES27()`, `EES25()`, `RK4()`): at $\zeta = 1$
    the coupling's parasitic mode is excited by the base's asymmetry (DESIGN §2.8), so Euler or
    Tsit5 can be far less accurate than their Princeps scheme at coarse steps. The reverse SDE
    with noise prediction is unstable at $\zeta = 1$ and is refused; on the ODE, `sample` and
    `invert` warn (`rexjax.CouplingWarning`): use data prediction.

    **Arguments:**

    - `base`: an explicit RK solver (default `rexjax.EES27()`); for the reverse SDE
        `diffrax.Euler()` (Euler–Maruyama) or an additive-noise SRK (`diffrax.ShARK()`, ...).
    - `prediction`: `"data"` or `"noise"`.
    - `bits`: the fixed-point resolution: $|x| \le$ `x_max` at every grid time fits in
        `bits` bits. Default `None`: 41 for float32 states (two `int32` limbs), 50 for
        float64 (one `int64`); at most these.
    - `x_max`: the bound on $|x|$ the scale is chosen for (default 4); values up to at least
        twice it are accepted, larger ones raise an error (raise `x_max`: it costs
        resolution).
    """

    base: diffrax.AbstractSolver = eqx.field(default_factory=lambda: _default_base())
    prediction: Prediction = "data"
    bits: int | None = None
    x_max: float = 4.0

    term_structure: ClassVar = AbstractTerm
    interpolation_cls: ClassVar = LocalLinearInterpolation

    def __check_init__(self):
        _check_prediction(self.prediction)
        base_tableau(self.base)
        if self.bits is not None and not (isinstance(self.bits, int) and 8 < self.bits <= 50):
            raise ValueError(
                f"bits must be an integer in (8, 50] (at most 41 for float32 states); got "
                f"{self.bits!r}. Leave bits=None for the most the state's dtype allows."
            )
        if not (isinstance(self.x_max, int | float) and self.x_max > 0):
            raise ValueError(f"x_max must be a positive number; got {self.x_max!r}.")

    @property
    def coupling(self) -> float:
        """The McCallum–Foster coupling: always 1 (the additive, exactly invertible case)."""
        return 1.0

    def order(self, terms):
        return self.base.order(terms)

    def strong_order(self, terms):
        return _strong_order(self.base, terms)

    def evaluations_per_step(self, adaptive: bool = False) -> int:
        """Model evaluations per step: two Lawson increments, as `rexjax.Rex`."""
        tableau = base_tableau(self.base)
        forward = tableau.b_sol.shape[0] if adaptive else tableau.num_solution_stages
        return forward + tableau.num_solution_stages

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    # -- the fixed-point grid ----------------------------------------------------------------

    def _bits(self, dtype) -> tuple[_Word, int]:
        word = _word(dtype)
        if self.bits is not None and self.bits > word.bits:
            raise ValueError(
                f"bits={self.bits} exceeds the {word.bits} bits of a {jnp.dtype(dtype).name} "
                "state's fixed-point words; use float64 states for more resolution."
            )
        return word, word.bits if self.bits is None else self.bits

    def _exponent(self, v: LawsonVariables, t0, t1, bits: int) -> Array:
        r"""$F$ from the end points: $2^F \le 2^{\mathrm{bits}}\kappa_{\min}/x_{\max}$, checked
        to leave at least 8 bits of resolution in $x$ where $\kappa$ is largest."""
        lk0, lk1 = v.log_kappa(t0), v.log_kappa(t1)
        lo, hi = jnp.minimum(lk0, lk1), jnp.maximum(lk0, lk1)
        log2e = 1 / np.log(2)
        exponent = jnp.floor(bits + lo * log2e - np.log2(self.x_max)).astype(jnp.int32)
        spread = (hi - lo) * log2e  # log2 of the kappa range
        ok = jnp.isfinite(spread) & (spread <= bits - _MIN_RESOLUTION_BITS)
        message = (
            "rexjax.ExactRex: over this grid the integrating factor kappa spans a ratio of more "
            f"than 2^{bits - _MIN_RESOLUTION_BITS}, so with one fixed-point scale the state "
            f"would keep fewer than {_MIN_RESOLUTION_BITS} bits of x where kappa is largest. "
            "Use more bits, float64 states (50 bits), a grid closer to the data (larger final "
            "time), or "
            "the ODE (the reverse SDE's kappa = sigma^2/alpha spans far more)."
        )
        if not isinstance(spread, jax.core.Tracer):
            if not bool(ok):
                raise ValueError(message)
            return exponent
        return eqx.error_if(exponent, ~ok, message)

    def _scale(self, exponent: Array, dtype) -> tuple[Array, Array]:
        """`(2^F, 2^-F)` in `dtype` (exact powers of two)."""
        one = jnp.ones((), dtype)
        return jnp.ldexp(one, exponent), jnp.ldexp(one, -exponent)

    def _limbs_in_range(self, r: Array, limit: float, where: str) -> Array:
        """Integer-valued floats `r` as limbs, refusing magnitudes at or above `limit`."""
        ok = jnp.all(jnp.abs(r) < limit)
        r = eqx.error_if(r, ~ok, _overflow_message(where, self.x_max))
        return _to_limbs(r, _word(r.dtype))

    def _quantise(self, values: Y, exponent: Array, limit: float, where: str) -> Y:
        """`round(values 2^F)` as limbs, refusing magnitudes at or above `limit`."""

        def leaf(x):
            up, _ = self._scale(exponent, x.dtype)
            return self._limbs_in_range(jnp.round(x * up), limit, where)

        return jtu.tree_map(leaf, values)

    def _quantise_input(self, x: Y, kappa: Array, exponent: Array, limit: float) -> Y:
        r"""Float inputs `x` at a time with integrating factor `kappa` onto the grid: the
        integer $N$ whose view $\kappa\,\mathrm{fl}(N 2^{-F})$ is `x` bitwise when one exists.

        Candidates: $r_0 = \mathrm{round}(\mathrm{fl}(x/\kappa) 2^F)$ and its neighbours
        $r_0 + k s$, $|k| \le 8$, with $s = \max(1, \mathrm{ulp}(x/\kappa) 2^F/2)$. If the
        view of some $r^*$ is $x$ then $|\mathrm{fl}(r^* 2^{-F}) - x/\kappa| \le 2$ ulp, so
        either the grid is finer than half an ulp and $|r^* - r_0| < 7$ steps of 1, or the
        float $\mathrm{fl}(r^* 2^{-F})$ lies on the half-ulp lattice within 8 steps of $r_0$:
        a candidate always has the same view. The nearest such candidate is kept; without
        one, $r_0$ (within half a grid step plus one rounding)."""

        def leaf(x):
            x, dtype = jax.lax.stop_gradient(x), x.dtype  # integers carry no derivatives
            up, down = self._scale(exponent, dtype)
            k = kappa.astype(dtype)
            y = _finite(x / k, "the initial value of ExactRex")
            r0 = jnp.round(y * up)
            step = jnp.maximum(1, jnp.spacing(jnp.abs(y)) * up / 2)
            order = sorted(range(-_SEARCH, _SEARCH + 1), key=abs)  # nearest first
            r = r0
            for j in reversed(order):  # the last assignment (the nearest hit) wins
                cand = r0 + j * step
                r = jnp.where(k * (cand * down) == x, cand, r)
            return self._limbs_in_range(r, limit, "the initial value")

        return jtu.tree_map(leaf, x)

    def _view(self, n: Y, exponent: Array, kappa: Array, dtype) -> Y:
        r"""The float view $\kappa\,\mathrm{fl}(N 2^{-F})$ of an integer state."""
        _, down = self._scale(exponent, dtype)
        return jtu.tree_map(lambda x: kappa.astype(dtype) * _limbs_value(x, down), n)

    def _limit(self, dtype) -> float:
        _, bits = self._bits(dtype)
        return float(2 ** (bits + 1))

    def _variables(self, terms, t0, t1):
        term, path, t0, t1 = _split_sde(terms, t0, t1, self.prediction, self.base)
        v = LawsonVariables(term.schedule, self.prediction, stochastic=path is not None)
        return term, path, t0, t1, v

    def init(self, terms, t0, t1, y0, args) -> ExactState:
        r"""Quantise `y0` at `t0` onto the fixed-point grid of the solve from `t0` to `t1`.

        `t1` must be the other end of the whole grid (not diffrax's first step): it fixes the
        scale. `rexjax.sample` and `rexjax.invert` pass the grid's end points.
        """
        del args
        _, _, t0, t1, v = self._variables(terms, t0, t1)
        dtype = _dtype(y0)
        _, bits = self._bits(dtype)
        exponent = self._exponent(v, t0, t1, bits)
        kappa0 = jnp.exp(v.log_kappa(t0))
        n = self._quantise_input(y0, kappa0, exponent, self._limit(dtype))
        return ExactState(n, n, self._view(n, exponent, kappa0, dtype), exponent)

    def round_to_grid(self, terms: AbstractTerm, x: Y, t: RealScalarLike, ts) -> Y:
        """The float `x` at time `t` rounded onto the fixed-point grid of the solve along `ts`
        (whose end points fix the scale): the inputs that round trips keep bitwise."""
        ts = jnp.asarray(ts)
        state = self.init(terms, jnp.asarray(t, ts.dtype), _other_end(ts, t), x, None)
        return state.y_hat

    def grid_step(self, terms: AbstractTerm, t: RealScalarLike, ts, dtype) -> Array:
        r"""The spacing $\kappa(t) 2^{-F}$ of the grid in $x$ units at time `t` (twice the
        largest error of a round trip of an off-grid float input)."""
        ts = jnp.asarray(ts)
        t = jnp.asarray(t, ts.dtype)
        _, _, t0, t1, v = self._variables(terms, t, _other_end(ts, t))
        _, bits = self._bits(dtype)
        _, down = self._scale(self._exponent(v, t0, t1, bits), dtype)
        return jnp.exp(v.log_kappa(t0)).astype(dtype) * down

    # -- the steps ---------------------------------------------------------------------------

    def _psi(self, v, term, path, t0, t1, x, args, *, reverse: bool):
        r"""$\Psi_h(t_0 \to t_1, x)$, or $\Psi_{-h}(t_1 \to t_0, x)$ with the step's Brownian
        increment reversed (`reverse=True`), as a branch of a `jax.lax.cond` (on
        $t_0 \ne t_1$; a zero-length step has $\Psi = 0$). XLA compiles a branch as its own
        computation, so the arithmetic of $\Psi$ (the Brownian query included) does not
        depend on what surrounds it (the fusion decisions of the forward and the backward
        programs): both directions evaluate it bit-identically."""

        def compute(dynamic):
            x, t0, t1, path, args, term_, v_ = eqx.combine(dynamic, static)
            noise = _step_noise(path, self.base, v_, t0, t1)
            if reverse:
                t0, t1, noise = t1, t0, _reversed(noise)
            return lawson_increment(base_tableau(self.base), v_, term_, t0, t1, x, args, noise)

        def zero(dynamic):
            psi, err = jax.eval_shape(compute, dynamic)
            return jtu.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), (psi, err))

        # Every array the branch reads (the model's parameters and the Brownian path included)
        # goes through an optimisation barrier, so that XLA cannot constant-fold closed-over
        # values with its own (compile-time) arithmetic in one program and not the other.
        dynamic, static = eqx.partition((x, t0, t1, path, args, term, v), eqx.is_array)
        dynamic = jax.lax.optimization_barrier(dynamic)
        return jax.lax.cond(t0 != t1, compute, zero, dynamic)

    def _parts(self, terms, t0, t1):
        term, path, t0, t1, v = self._variables(terms, t0, t1)
        return term, path, t0, t1, v, jnp.exp(v.log_kappa(t0)), jnp.exp(v.log_kappa(t1))

    def _lawson_view(self, n, exponent, dtype):
        _, down = self._scale(exponent, dtype)
        return jtu.tree_map(lambda x: _limbs_value(x, down), n)

    def step(self, terms, t0, t1, y0, args, solver_state: ExactState, made_jump):
        del made_jump
        term, path, t0, t1, v, kappa0, kappa1 = self._parts(terms, t0, t1)
        s, dtype = solver_state, _dtype(y0)
        limit, exponent = self._limit(dtype), solver_state.exponent
        # Float copies with the exact (integer) values and the derivatives of y0, y_hat.
        y0s = jtu.tree_map(
            _straight_through, _scale(1 / kappa0, y0), self._lawson_view(s.n, exponent, dtype)
        )
        yh0s = jtu.tree_map(
            _straight_through,
            _scale(1 / kappa0, s.y_hat),
            self._lawson_view(s.n_hat, exponent, dtype),
        )
        psi, err = self._psi(v, term, path, t0, t1, _scale(kappa0, yh0s), args, reverse=False)
        psi = _finite(psi, "an ExactRex step (forward substep)")
        n1 = jtu.tree_map(_add, s.n, self._quantise(psi, exponent, limit, "a forward increment"))
        n1 = _checked(n1, limit, "the state after a step", self.x_max)
        y1s = jtu.tree_map(
            _straight_through,
            jtu.tree_map(jnp.add, y0s, psi),
            self._lawson_view(n1, exponent, dtype),
        )
        y1 = _scale(kappa1, y1s)
        psi_back, _ = self._psi(v, term, path, t0, t1, y1, args, reverse=True)
        psi_back = _finite(psi_back, "an ExactRex step (reverse substep)")
        nh1 = jtu.tree_map(
            _subtract, s.n_hat, self._quantise(psi_back, exponent, limit, "a reverse increment")
        )
        nh1 = _checked(nh1, limit, "the coupled copy after a step", self.x_max)
        yh1s = jtu.tree_map(
            _straight_through,
            jtu.tree_map(jnp.subtract, yh0s, psi_back),
            self._lawson_view(nh1, exponent, dtype),
        )
        state1 = ExactState(n1, nh1, _scale(kappa1, yh1s), exponent)
        y_error = None if err is None else _scale(kappa1, err)
        return y1, y_error, dict(y0=y0, y1=y1), state1, RESULTS.successful

    def backward_step(self, terms, t0, t1, y1, args, ts_state, solver_state, made_jump):
        del ts_state, made_jump
        term, path, t0, t1, v, kappa0, kappa1 = self._parts(terms, t0, t1)
        s, dtype = solver_state, _dtype(y1)
        limit, exponent = self._limit(dtype), solver_state.exponent
        x1 = self._view(s.n, exponent, kappa1, dtype)  # bitwise the forward step's y1
        psi_back, _ = self._psi(v, term, path, t0, t1, x1, args, reverse=True)
        psi_back = _finite(psi_back, "an ExactRex backward step")
        nh0 = jtu.tree_map(
            _add, s.n_hat, self._quantise(psi_back, exponent, limit, "a reverse increment")
        )
        nh0 = _checked(nh0, limit, "the coupled copy in a backward step", self.x_max)
        xh0 = self._view(nh0, exponent, kappa0, dtype)
        psi, _ = self._psi(v, term, path, t0, t1, xh0, args, reverse=False)
        psi = _finite(psi, "an ExactRex backward step")
        n0 = jtu.tree_map(
            _subtract, s.n, self._quantise(psi, exponent, limit, "a forward increment")
        )
        n0 = _checked(n0, limit, "the state in a backward step", self.x_max)
        y0 = self._view(n0, exponent, kappa0, dtype)
        return y0, dict(y0=y0, y1=x1), ExactState(n0, nh0, xh0, exponent), RESULTS.successful


def _default_base():
    from ._tableaus import EES27

    return EES27()


def _dtype(y: Y):
    return jnp.result_type(*jtu.tree_leaves(y))


def _other_end(ts: Array, t) -> Array:
    """The end point of `ts` that is not `t` (for a 1-D grid)."""
    t = jnp.asarray(t, ts.dtype)
    return jnp.where(t == ts[0], ts[-1], ts[0])


def _overflow_message(where: str, x_max: float) -> str:
    return (
        f"rexjax.ExactRex: {where} leaves the fixed-point range (|x| beyond about "
        f"{2 * x_max:g}, the scale chosen for x_max={x_max:g}); it is refused rather than "
        "wrapped around. Construct the solver with a larger `x_max` (it costs resolution), use "
        "float64 states, or check the model for exploding outputs. With diffrax.diffeqsolve, "
        "pass solver_state=solver.init(term, t0, t1, y0, args) so that the scale covers the "
        "whole solve."
    )


def _checked(n: Y, limit: float, where: str, x_max: float) -> Y:
    """`n`, with an error where the most significant limb reaches `limit` (in units of the
    whole number)."""

    def small(x):
        scale = 2 ** (_LIMB_BITS * (x.shape[-1] - 1))
        return jnp.all(jnp.abs(x[..., 0]) < limit / scale)

    ok = jnp.all(jnp.stack([small(x) for x in jtu.tree_leaves(n)]))
    return eqx.error_if(n, ~ok, _overflow_message(where, x_max))
