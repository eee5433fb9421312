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


def ees25_tableau(x: float = 1 / 10) -> ButcherTableau:
    r"""The EES(2,5; x) tableau: 3 stages, classical order 2, antisymmetric order 5 (see
    `rexjax.EES25`). Defined for x not in {1, 1/2, -1/2}."""
    if x in (1.0, 0.5, -0.5):
        raise ValueError(f"EES(2,5; x) is undefined at x = {x}: pick x outside {{1, 1/2, -1/2}}.")
    a21 = (1 + 2 * x) / (4 * (1 - x))
    a31 = (4 * x - 1) ** 2 / (4 * (x - 1) * (1 - 4 * x**2))
    a32 = (1 - x) / (1 - 4 * x**2)
    return ButcherTableau(
        c=np.array([a21, a31 + a32]),
        b_sol=np.array([x, 1 / 2, 1 / 2 - x]),
        b_error=np.zeros(3),
        a_lower=(np.array([a21]), np.array([a31, a32])),
    )


def ees27_tableau(x: float = (5 - 3 * np.sqrt(2)) / 14) -> ButcherTableau:
    r"""The EES(2,7; x) tableau: 4 stages, classical order 2, antisymmetric order 7 (see
    `rexjax.EES27`; the "+sqrt(2)" branch of the family)."""
    r2 = np.sqrt(2.0)
    singular = [(2 * x - 1), (4 * x**2 - 4 * x - 1), (2 * x**2 - 4 * x + 1), (x - 1)]
    if any(abs(d) < 1e-12 for d in singular + [2 * x**2 - 1]):
        raise ValueError(f"EES(2,7; x) is undefined at x = {x}: pick another x (e.g. 1/10).")
    alpha = (-2 * x + r2 + 1) * (2 * x + r2) / ((2 * x - 1) * (4 * x**2 - 4 * x - 1))
    beta = (1 + r2 - 2 * x) * (2 + r2 - 2 * x)
    beta /= (2 * x - 1) * (2 * x**2 - 4 * x + 1) * (4 * x**2 - 4 * x - 1)
    a21 = (-2 + r2 * (1 - 2 * x)) / (4 * (x - 1))
    a31 = (2 * x + r2 - 2) * (4 * x + r2 - 2) * alpha / (4 * r2 * (x - 1))
    a32 = (r2 - 1) * alpha / 2
    poly = -40 * x**4 + (80 - 40 * r2) * x**3 - (88 - 60 * r2) * x**2 + (48 - 34 * r2) * x
    a41 = beta * (2 * x - r2) * (poly + 7 * r2 - 10) / (8 * (x - 1) * (2 * x**2 - 1))
    a42 = (2 - r2) * x * (x - 1) * (4 * x + r2 - 2) * beta / 2
    a43 = (2 - r2) * (2 * x - r2) * (2 + r2 - 2 * x) * (x - 1) * (2 * x - 1)
    a43 /= 4 * (2 * x**2 - 1) * (2 * x**2 - 4 * x + 1)
    b = np.array([x, (2 - r2) / 2 - (1 - r2) * x, (1 - r2) * (x - 1), (2 - r2) / 2 - x])
    return ButcherTableau(
        c=np.array([a21, a31 + a32, a41 + a42 + a43]),
        b_sol=b,
        b_error=np.zeros(4),
        a_lower=(np.array([a21]), np.array([a31, a32]), np.array([a41, a42, a43])),
    )


class EES25(_AbstractNonEmbeddedERK):
    r"""EES(2,5; 1/10), the explicit and effectively symmetric Runge–Kutta method of
    Shmelev et al.: 3 stages, classical order 2, antisymmetric order 5
    ($\Phi_{-h}\circ\Phi_h = \mathrm{id} + O(h^6)$, like RK4 with one stage fewer).
    Stability function $1 + z + z^2/2 + z^3/8$ for every x (real interval $[-3.09, 0]$).

    As a `rexjax.Rex` base it keeps the coupled copy next to the solution (see the README's
    table of safe configurations); inverted by stepping backwards it is near-reversible
    (`rexjax.NearReversible`). No embedded error.

    ```
     0   |
     1/3 | 1/3
     5/6 | -5/48   15/16
    -----+------------------
         | 1/10    1/2    2/5
    ```
    `rexjax.ees25_tableau(x)` gives the rest of the one-parameter family.

    ??? cite "Reference"

        Shmelev, Ebrahimi-Fard, Tapia, Salvi, "Explicit and effectively symmetric
        Runge–Kutta methods", arXiv:2507.21006, 2025.
    """

    tableau: ClassVar[ButcherTableau] = ees25_tableau()
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 2


class EES27(_AbstractNonEmbeddedERK):
    r"""EES(2,7; (5-3√2)/14), the explicit and effectively symmetric Runge–Kutta method of
    Shmelev et al.: 4 stages, classical order 2, antisymmetric order 7
    ($\Phi_{-h}\circ\Phi_h = \mathrm{id} + O(h^8)$, better than RK4 and RK5). Stability
    function $1 + z + z^2/2 + \tfrac{2-\sqrt2}{4}z^3 + \tfrac{3-2\sqrt2}{8}z^4$ (real interval
    $[-3.92, 0]$). No embedded error.

    ```
     0        |
     (2-√2)/3 | (2-√2)/3
     (2+√2)/6 | (-4+√2)/24         (4+√2)/8
     (4+√2)/6 | (-176+145√2)/168   3(8-5√2)/56   3(3-√2)/7
    ----------+------------------------------------------------------------
              | (5-3√2)/14   (3+√2)/14   3(-1+2√2)/14   (9-4√2)/14
    ```
    `rexjax.ees27_tableau(x)` gives the rest of the one-parameter family.

    ??? cite "Reference"

        Shmelev, Ebrahimi-Fard, Tapia, Salvi, "Explicit and effectively symmetric
        Runge–Kutta methods", arXiv:2507.21006, 2025.
    """

    tableau: ClassVar[ButcherTableau] = ees27_tableau()
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 2
