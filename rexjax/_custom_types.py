"""jaxtyping aliases shared across rexjax (one place, as in diffrax)."""

from typing import Any, TypeAlias

from jaxtyping import Array, ArrayLike, Float, PyTree, Shaped


RealScalarLike: TypeAlias = float | int | Float[ArrayLike, ""]
RealScalar: TypeAlias = Float[Array, ""]
Times: TypeAlias = Float[ArrayLike, " n"]
Y: TypeAlias = PyTree[Shaped[ArrayLike, "?*y"], "Y"]
Args: TypeAlias = PyTree[Any]
