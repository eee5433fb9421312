r"""Symmetric compositions of an (effectively) symmetric Runge–Kutta step, as one explicit
tableau: a fourth-order, effectively symmetric base for `rexjax.Rex` / `rexjax.Princeps`."""

from collections.abc import Sequence
from typing import ClassVar

import diffrax
import numpy as np
from diffrax import ButcherTableau

from ._tableaus import _AbstractNonEmbeddedERK, ees27_tableau


def suzuki_fractions() -> tuple[float, ...]:
    r"""Suzuki's five-substep fractal $(p, p, 1-4p, p, p)$ with $p = 1/(4 - 4^{1/3})$.

    The fractions sum to one and their cubes to zero, so composing a symmetric second-order
    step gives a symmetric fourth-order one. Unlike Yoshida's triple jump, every partial sum
    lies in $[0, 1]$: all substeps (and, for tableaus with nodes in $[0, 1]$, all stage times)
    stay inside the step, which matters in the Lawson time, where a stage beyond the step can
    leave the schedule's domain.
    """
    p = 1 / (4 - 4 ** (1 / 3))
    return (p, p, 1 - 4 * p, p, p)


def symmetric_composition(
    tableau: ButcherTableau, fractions: Sequence[float] = suzuki_fractions()
) -> ButcherTableau:
    r"""The tableau of the composition $\Phi_{\gamma_k h}\circ\cdots\circ\Phi_{\gamma_1 h}$ of
    an explicit RK step $\Phi$ with itself.

    With the base $(A, b, c)$ of $s$ stages and offsets $o_k = \sum_{j<k}\gamma_j$, the
    composite has $ks$ stages: diagonal blocks $\gamma_k A$, blocks $\gamma_j \mathbb 1 b^\top$
    below them ($j < k$), weights $(\gamma_k b)_k$ and nodes $(o_k + \gamma_k c)_k$.

    If the fractions are palindromic, sum to one and have vanishing cubic sum (e.g.
    `suzuki_fractions()`), the composition of a symmetric method of order 2 has order 4
    (Yoshida 1990, Suzuki 1990). An *effectively* symmetric base (antisymmetric order $m$,
    e.g. `rexjax.EES27`, $m = 7$) differs from a symmetric one by $O(h^{m+1})$, so the
    composite has classical order 4 for $m \ge 4$ and keeps an antisymmetric order of at least
    $m$; check both with `rexjax.classical_order` / `rexjax.antisymmetric_order`.

    **Arguments:**

    - `tableau`: an explicit `diffrax.ButcherTableau`.
    - `fractions`: the substep fractions $\gamma_k$ (summing to one).

    **Returns:** the composite explicit `diffrax.ButcherTableau` (no embedded error).
    """
    if tableau.a_diagonal is not None:
        raise ValueError("symmetric_composition needs an explicit tableau (no a_diagonal).")
    gammas = np.asarray(fractions, dtype=np.float64)
    if gammas.ndim != 1 or gammas.size < 1 or not np.isclose(gammas.sum(), 1, atol=1e-14):
        raise ValueError(
            f"The fractions must be a non-empty sequence summing to one; got {fractions}."
        )
    s = tableau.b_sol.shape[0]
    a = np.zeros((s, s))
    for i, row in enumerate(tableau.a_lower):
        a[i + 1, : i + 1] = row
    b = np.asarray(tableau.b_sol, dtype=np.float64)
    c = a.sum(axis=1)
    k = gammas.size
    big_a = np.zeros((k * s, k * s))
    offsets = np.concatenate([[0.0], np.cumsum(gammas)[:-1]])
    for i, gamma in enumerate(gammas):
        rows = slice(i * s, (i + 1) * s)
        big_a[rows, rows] = gamma * a
        for j in range(i):
            big_a[rows, j * s : (j + 1) * s] = gammas[j] * b[None, :]
    big_b = np.concatenate([g * b for g in gammas])
    big_c = np.concatenate([o + g * c for o, g in zip(offsets, gammas, strict=True)])
    return ButcherTableau(
        c=big_c[1:],
        b_sol=big_b,
        b_error=np.zeros(k * s),
        a_lower=tuple(big_a[i, :i] for i in range(1, k * s)),
    )


class EES27x5(_AbstractNonEmbeddedERK):
    r"""Suzuki's five-substep symmetric composition of EES(2,7) (`rexjax.EES27`): an explicit
    20-stage method of classical order 4 and antisymmetric order 7, every stage time inside
    the step. See `rexjax.symmetric_composition`. No embedded error.

    ??? cite "References"

        Suzuki, "Fractal decomposition of exponential operators with applications to
        many-body theories and Monte Carlo simulations", Phys. Lett. A 146, 1990.
        Shmelev, Ebrahimi-Fard, Tapia, Salvi, arXiv:2507.21006, 2025.
    """

    tableau: ClassVar[ButcherTableau] = symmetric_composition(ees27_tableau())
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 4
