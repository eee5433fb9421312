"""Strict reading of diffusers / transformers `config.json` files."""

from collections.abc import Callable, Mapping
from typing import Any


# Keys that describe the checkpoint or training, not the forward computation at inference.
_IGNORED = frozenset(
    {"sample_size", "num_train_timesteps", "dropout", "force_upcast", "architectures"}
)

Allowed = tuple[Any, ...] | Callable[[Any], bool] | None


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def read_config(
    config: Mapping[str, Any],
    model: str,
    spec: Mapping[str, tuple[Any, Allowed]],
    ignored: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Validate `config` against `spec` and fill in defaults.

    **Arguments:**

    - `config`: the parsed `config.json`.
    - `model`: the model's name, for error messages.
    - `spec`: `{key: (default, allowed)}`; `allowed` is a tuple of the supported values, a
        predicate, or `None` for "any value".
    - `ignored`: further keys that do not affect the forward computation.

    **Returns:**

    A dict with one entry per key of `spec` (lists turned into tuples).

    **Raises:**

    `ValueError` naming every unsupported value, and every unknown key whose value is not null
    (keys starting with `_` and training-only keys such as `sample_size` are ignored).
    """
    problems = []
    out = {}
    for key, (default, allowed) in spec.items():
        value = _freeze(config.get(key, default))
        if isinstance(allowed, tuple):
            ok = value in allowed
        elif allowed is None:
            ok = True
        else:
            ok = allowed(value)
        if not ok:
            shown = f"one of {list(allowed)}" if isinstance(allowed, tuple) else "a valid value"
            problems.append(f"{key}={value!r} (rexjax supports {shown})")
        out[key] = value
    for key, value in config.items():
        if key.startswith("_") or key in spec or key in _IGNORED or key in ignored or value is None:
            continue
        problems.append(f"{key}={value!r} (unknown option)")
    if problems:
        raise ValueError(
            f"Unsupported {model} config: " + "; ".join(problems) + ". rexjax's Flax port does "
            "not implement these options; use a checkpoint without them or extend the port."
        )
    return out


def per_block(value: Any, n: int, key: str) -> tuple:
    """Broadcast an int/bool option to `n` blocks, or check a per-block tuple's length."""
    if isinstance(value, tuple):
        if len(value) != n:
            raise ValueError(f"{key} has {len(value)} entries but the model has {n} blocks.")
        return value
    return (value,) * n
