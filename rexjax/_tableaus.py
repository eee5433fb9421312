r"""Explicit Runge–Kutta tableaus that diffrax 0.7.2 lacks, as diffrax solvers.

Each is a plain `diffrax.AbstractERK` (usable on its own in `diffrax.diffeqsolve`) and a valid
`base` for `rexjax.Rex` / `rexjax.Princeps`. Tableaus are validated data: diffrax's
`ButcherTableau` checks row sums and weights on construction.
"""

import dataclasses
from typing import ClassVar

import diffrax
import numpy as np
from diffrax import ButcherTableau


@dataclasses.dataclass(frozen=True)
class ExplicitTableau:
    """An explicit Runge–Kutta tableau as the Lawson step reads it (not a pytree).

    `c` are the nodes of stages 2..s, `a_lower[i]` the row of stage i+2, `b_sol` the weights and
    `b_error` the embedded-error weights (`None` when the method has no embedded error).
    Consistency (row sums equal nodes, weights sum to one, error weights to zero) is checked
    on construction.
    """

    c: np.ndarray
    a_lower: tuple[np.ndarray, ...]
    b_sol: np.ndarray
    b_error: np.ndarray | None

    def __post_init__(self):
        s = self.b_sol.shape[0]
        if self.c.shape != (s - 1,) or len(self.a_lower) != s - 1:
            raise ValueError("A tableau with s stages needs s-1 nodes c and s-1 rows a_lower.")
        for i, (a_i, c_i) in enumerate(zip(self.a_lower, self.c, strict=True)):
            if a_i.shape != (i + 1,) or not np.isclose(a_i.sum(), c_i, rtol=0, atol=1e-14):
                raise ValueError(f"Tableau row {i + 2} needs {i + 1} entries summing to its c.")
        if not np.isclose(self.b_sol.sum(), 1.0, rtol=0, atol=1e-14):
            raise ValueError("The weights b_sol must sum to one.")
        if self.b_error is not None and (
            self.b_error.shape != (s,) or not np.isclose(self.b_error.sum(), 0, rtol=0, atol=1e-14)
        ):
            raise ValueError("The error weights b_error must have s entries summing to zero.")

    @property
    def num_solution_stages(self) -> int:
        """Stages the solution needs: trailing stages with zero weight serve only the error
        estimate (e.g. Tsit5's last, first-same-as-last stage) and are skipped by XLA when no
        error estimate is used."""
        nonzero = np.flatnonzero(self.b_sol)
        return int(nonzero[-1]) + 1

    @classmethod
    def from_butcher(cls, tableau: ButcherTableau) -> "ExplicitTableau":
        if tableau.a_diagonal is not None:
            raise ValueError("Only explicit tableaus can be used.")
        error = tableau.b_error if np.any(tableau.b_error != 0) else None
        return cls(tableau.c, tableau.a_lower, tableau.b_sol, error)


# Forward Euler, so that `diffrax.Euler()` (not an ERK in diffrax) can be a base.
EULER_TABLEAU = ExplicitTableau(c=np.zeros(0), a_lower=(), b_sol=np.ones(1), b_error=None)

_rk4_tableau = ButcherTableau(
    c=np.array([1 / 2, 1 / 2, 1.0]),
    b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    b_error=np.zeros(4),
    a_lower=(np.array([1 / 2]), np.array([0.0, 1 / 2]), np.array([0.0, 0.0, 1.0])),
)

_rk38_tableau = ButcherTableau(
    c=np.array([1 / 3, 2 / 3, 1.0]),
    b_sol=np.array([1 / 8, 3 / 8, 3 / 8, 1 / 8]),
    b_error=np.zeros(4),
    a_lower=(np.array([1 / 3]), np.array([-1 / 3, 1.0]), np.array([1.0, -1.0, 1.0])),
)

_ssprk3_tableau = ButcherTableau(
    c=np.array([1.0, 1 / 2]),
    b_sol=np.array([1 / 6, 1 / 6, 2 / 3]),
    b_error=np.zeros(3),
    a_lower=(np.array([1.0]), np.array([1 / 4, 1 / 4])),
)

_fehlberg_b4 = np.array([25 / 216, 0.0, 1408 / 2565, 2197 / 4104, -1 / 5, 0.0])
_fehlberg_b5 = np.array([16 / 135, 0.0, 6656 / 12825, 28561 / 56430, -9 / 50, 2 / 55])
_fehlberg45_tableau = ButcherTableau(
    c=np.array([1 / 4, 3 / 8, 12 / 13, 1.0, 1 / 2]),
    b_sol=_fehlberg_b4,
    b_error=_fehlberg_b4 - _fehlberg_b5,
    a_lower=(
        np.array([1 / 4]),
        np.array([3 / 32, 9 / 32]),
        np.array([1932 / 2197, -7200 / 2197, 7296 / 2197]),
        np.array([439 / 216, -8.0, 3680 / 513, -845 / 4104]),
        np.array([-8 / 27, 2.0, -3544 / 2565, 1859 / 4104, -11 / 40]),
    ),
)


class _AbstractNonEmbeddedERK(diffrax.AbstractERK):
    """An ERK without an embedded error estimate: it reports none (`y_error=None`), so adaptive
    step-size controllers refuse it instead of reading a zero error."""

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y1, _, dense_info, solver_state, result = super().step(
            terms, t0, t1, y0, args, solver_state, made_jump
        )
        return y1, None, dense_info, solver_state, result


class RK4(_AbstractNonEmbeddedERK):
    """The classic fourth-order Runge–Kutta method (Kutta 1901). No embedded error."""

    tableau: ClassVar[ButcherTableau] = _rk4_tableau
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 4


class RK38(_AbstractNonEmbeddedERK):
    """Kutta's 3/8-rule fourth-order method. No embedded error."""

    tableau: ClassVar[ButcherTableau] = _rk38_tableau
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 4


class SSPRK3(_AbstractNonEmbeddedERK):
    """The three-stage, third-order strong-stability-preserving method of Shu & Osher (1988).
    No embedded error."""

    tableau: ClassVar[ButcherTableau] = _ssprk3_tableau
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 3


class Fehlberg45(diffrax.AbstractERK):
    """Fehlberg's RK4(5) (Fehlberg 1969): the fourth-order solution is propagated and the
    fifth-order one gives the embedded error estimate."""

    tableau: ClassVar[ButcherTableau] = _fehlberg45_tableau
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 4
