r"""Order conditions of explicit Runge–Kutta tableaus on rooted trees: the classical order and
the *antisymmetric order*, which governs how well a scheme retraces its own steps.

A one-step method $\Phi_h$ has antisymmetric order $m$ when $\Phi_{-h}\circ\Phi_h = \mathrm{id}
+ O(h^{m+1})$. $\Phi_{-h}\circ\Phi_h$ is itself a Runge–Kutta method, with tableau
$A_c = \begin{pmatrix} A & 0 \\ \mathbb{1} b^\top & -A\end{pmatrix}$, $b_c = (b, -b)$, and
it is the identity up to $O(h^{m+1})$ exactly when its elementary weights vanish on every rooted
tree with at most $m$ vertices. Euler has $m = 1$, midpoint and Heun 3, RK4 5, EES(2,5) 5 and
EES(2,7) 7; every method of even classical order $p$ has $m \ge p + 1$.

The antisymmetric order is what matters for `rexjax.Rex`: the McCallum–Foster coupling's
parasitic mode is excited by $\Phi_{-h}\circ\Phi_h - \mathrm{id}$ (see the README, "behaviours
of the coupling").

??? cite "References"

    Butcher, "Numerical methods for ordinary differential equations", 3rd ed., 2016 (trees,
    elementary weights). Shmelev, Ebrahimi-Fard, Tapia, Salvi, "Explicit and effectively
    symmetric Runge–Kutta methods", arXiv:2507.21006, 2025 (antisymmetric order).
"""

import functools

import diffrax
import numpy as np

from ._tableaus import ExplicitTableau


Tree = tuple  # a rooted tree: the sorted tuple of its children's trees; () is a single vertex


@functools.cache
def rooted_trees(order: int) -> tuple[Tree, ...]:
    """All rooted trees with `order` vertices (1, 1, 2, 4, 9, 20, 48, 115, 286, ...)."""
    if order < 1:
        raise ValueError(f"A rooted tree has at least one vertex; got order {order}.")
    if order == 1:
        return ((),)
    forests = set()
    _forests(order - 1, None, (), forests)
    return tuple(sorted(forests, key=repr))


def _forests(remaining: int, largest: Tree | None, prefix: tuple, out: set) -> None:
    """Multisets of trees with `remaining` vertices in total, children listed in a canonical
    (non-increasing) order so that each multiset appears once."""
    if remaining == 0:
        out.add(prefix)
        return
    for size in range(remaining, 0, -1):
        for tree in rooted_trees(size):
            if largest is not None and _key(tree) > _key(largest):
                continue
            _forests(remaining - size, tree, prefix + (tree,), out)


@functools.cache
def _key(tree: Tree) -> tuple:
    return (_size(tree), repr(tree))


@functools.cache
def _size(tree: Tree) -> int:
    return 1 + sum(_size(child) for child in tree)


@functools.cache
def _density(tree: Tree) -> int:
    """gamma(t) = |t| prod gamma(children): the exact solution's weight is 1/gamma(t)."""
    return _size(tree) * int(np.prod([_density(child) for child in tree]))


def _stage_weights(a: np.ndarray, tree: Tree) -> np.ndarray:
    """g(t)_i = prod over children c of (A g(c))_i; the elementary weight is b . g(t)."""
    g = np.ones(a.shape[0])
    for child in tree:
        g = g * (a @ _stage_weights(a, child))
    return g


def _dense(tableau) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) as dense float64 arrays from a diffrax solver, a ButcherTableau or an
    ExplicitTableau."""
    if isinstance(tableau, diffrax.Euler):
        return np.zeros((1, 1)), np.ones(1)
    if isinstance(tableau, diffrax.AbstractERK):
        tableau = tableau.tableau
    if isinstance(tableau, diffrax.ButcherTableau):
        if tableau.a_diagonal is not None:
            raise ValueError("Order conditions are computed for explicit tableaus only.")
        tableau = ExplicitTableau.from_butcher(tableau)
    if not isinstance(tableau, ExplicitTableau):
        raise ValueError(
            "Expected diffrax.Euler(), an explicit diffrax RK solver (e.g. diffrax.Tsit5(), "
            f"rexjax.EES27()), a diffrax.ButcherTableau or a rexjax tableau; got {tableau!r}."
        )
    s = tableau.b_sol.shape[0]
    a = np.zeros((s, s))
    for i, row in enumerate(tableau.a_lower):
        a[i + 1, : i + 1] = row
    return a, np.asarray(tableau.b_sol, dtype=np.float64)


def _defects(a, b, max_order, exact):
    """Per order, the largest |Phi(t) - exact(t)| over the trees of that order."""
    return [
        max(abs(b @ _stage_weights(a, t) - exact(t)) for t in rooted_trees(n))
        for n in range(1, max_order + 1)
    ]


def _first_failure(defects, tol):
    for n, d in enumerate(defects, start=1):
        if d > tol:
            return n - 1
    return len(defects)


def classical_order(tableau, max_order: int = 9, tol: float = 1e-12) -> int:
    r"""The classical order of an explicit Runge–Kutta tableau: the largest $p \le$
    `max_order` with $\Phi(t) = 1/\gamma(t)$ on every rooted tree of at most $p$ vertices.

    **Arguments:**

    - `tableau`: `diffrax.Euler()`, an explicit diffrax RK solver, a `diffrax.ButcherTableau`
        or a `rexjax` tableau.
    - `max_order`: the largest order checked (trees up to this size).
    - `tol`: the tolerance on each condition (float64 coefficients).

    **Returns:** the order (`max_order` if every checked condition holds).
    """
    a, b = _dense(tableau)
    return _first_failure(_defects(a, b, max_order, lambda t: 1 / _density(t)), tol)


def antisymmetric_order(tableau, max_order: int = 9, tol: float = 1e-12) -> int:
    r"""The antisymmetric order $m$ of an explicit Runge–Kutta tableau:
    $\Phi_{-h}\circ\Phi_h = \mathrm{id} + O(h^{m+1})$, computed exactly on rooted trees of at
    most `max_order` vertices.

    **Arguments:** as `rexjax.classical_order`.

    **Returns:** $m$ (`max_order` if the composition is the identity on every checked tree,
    e.g. for a symmetric method up to that order).
    """
    a, b = _dense(tableau)
    s = b.shape[0]
    a_c = np.block([[a, np.zeros((s, s))], [np.tile(b, (s, 1)), -a]])
    b_c = np.concatenate([b, -b])
    return _first_failure(_defects(a_c, b_c, max_order, lambda t: 0.0), tol)
