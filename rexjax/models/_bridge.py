"""The PyTorch-checkpoint bridge: find, read, remap and verify diffusers/transformers weights.

Checkpoints are read with the safetensors numpy API; torch is imported only to read a `.bin`
file. Every tensor is checked by name and shape against the Flax module's parameters, and all
missing, unexpected or mis-shaped tensors are reported together.
"""

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict


class CheckpointMismatchError(ValueError):
    """A checkpoint whose tensors do not match the architecture its `config.json` describes."""


_WEIGHT_NAMES = ("diffusion_pytorch_model", "model")
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LEGACY_RE = re.compile(r"(\.attentions\.\d+\.)(query|key|value|proj_attn)(\.(weight|bias))$")


def resolve_component(folder: str | Path, subfolder: str) -> Path:
    """The folder holding one model: `folder/subfolder` if it has a `config.json` (a pipeline
    folder such as Stable Diffusion's), else `folder` itself.

    **Raises:**

    `FileNotFoundError` if neither holds a `config.json`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Checkpoint folder {str(folder)!r} does not exist.")
    for candidate in (folder / subfolder, folder):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"No config.json in {str(folder)!r} or in its {subfolder!r} subfolder. Pass the folder "
        "written by diffusers/transformers `save_pretrained` (or a pipeline folder containing "
        f"{subfolder!r})."
    )


def read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def _read_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"{str(path)!r} is a PyTorch pickle: reading it needs torch. Install torch, or "
            "convert the checkpoint to safetensors (e.g. `save_pretrained(..., "
            "safe_serialization=True)` on a machine with torch)."
        ) from error

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {
        k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()
    }


def read_state_dict(folder: Path, variant: str | None = None) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint in `folder`, as numpy arrays keyed by PyTorch name.

    Looks for `{diffusion_pytorch_model,model}[.variant].safetensors`, their sharded
    `.safetensors.index.json`, then the same names with `.bin` (needs torch).
    """
    suffix = f".{variant}" if variant else ""
    for name in _WEIGHT_NAMES:
        single = folder / f"{name}{suffix}.safetensors"
        if single.is_file():
            return _read_safetensors(single)
        index = folder / f"{name}{suffix}.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(read_json(index)["weight_map"].values()))
            out: dict[str, np.ndarray] = {}
            for shard in shards:
                out.update(_read_safetensors(folder / shard))
            return out
    for name in _WEIGHT_NAMES:
        binary = folder / f"{name}{suffix}.bin"
        if binary.is_file():
            return _read_bin(binary)
    raise FileNotFoundError(
        f"No weights in {str(folder)!r}: expected diffusion_pytorch_model{suffix}.safetensors "
        f"or model{suffix}.safetensors (or a sharded index, or a .bin file)."
    )


def torch_key_to_path(key: str) -> tuple[str, ...]:
    """`down_blocks.0.resnets.1.conv1.weight` -> `("down_blocks_0", "resnets_1", "conv1",
    "weight")`: a numeric segment is glued to the one before it."""
    path: list[str] = []
    for part in key.split("."):
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(part)
    return tuple(path)


def _to_flax(
    path: tuple[str, ...], tensor: np.ndarray, expected: Mapping[tuple[str, ...], Any]
) -> tuple[tuple[str, ...], np.ndarray]:
    prefix, leaf = path[:-1], path[-1]
    if leaf in ("weight", "gamma"):
        if prefix + ("kernel",) in expected:
            if tensor.ndim == 4:  # conv OIHW -> HWIO
                return prefix + ("kernel",), tensor.transpose(2, 3, 1, 0)
            return prefix + ("kernel",), tensor.T  # linear (out, in) -> (in, out)
        if prefix + ("embedding",) in expected:
            return prefix + ("embedding",), tensor
        return prefix + ("scale",), tensor
    if leaf == "beta":
        return prefix + ("bias",), tensor
    return path, tensor


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    expected: Mapping[str, Any],
    dtype: Any,
    *,
    ignore: Iterable[str] = (),
    legacy_attention: bool = False,
    what: str = "checkpoint",
) -> dict[str, Any]:
    """Remap a PyTorch state dict onto a Flax parameter tree and check it completely.

    **Arguments:**

    - `state_dict`: PyTorch-named numpy tensors.
    - `expected`: the Flax parameter tree of shapes (e.g. from `jax.eval_shape` of `init`).
    - `dtype`: the dtype of the returned parameters.
    - `ignore`: PyTorch names that are buffers rather than parameters (skipped).
    - `legacy_attention`: rename old diffusers attention tensors (`query`, `key`, `value`,
        `proj_attn`) to `to_q`, `to_k`, `to_v`, `to_out.0`.
    - `what`: a description for error messages.

    **Returns:**

    The parameter tree, same structure as `expected`, as `dtype` jax arrays.

    **Raises:**

    `CheckpointMismatchError` listing every missing, unexpected and mis-shaped tensor.
    """
    flat_expected = flatten_dict(expected)
    ignore = set(ignore)
    out: dict[tuple[str, ...], np.ndarray] = {}
    seen: set[tuple[str, ...]] = set()
    unexpected, mis_shaped = [], []
    for key, tensor in state_dict.items():
        if key in ignore:
            continue
        name = key
        if legacy_attention:
            name = _LEGACY_RE.sub(lambda m: m[1] + _LEGACY_ATTENTION[m[2]] + m[3], key)
        path, value = _to_flax(torch_key_to_path(name), np.asarray(tensor), flat_expected)
        if path not in flat_expected:
            unexpected.append(key)
            continue
        seen.add(path)
        want = tuple(flat_expected[path].shape)
        if value.shape != want:
            mis_shaped.append(f"{key} {tuple(tensor.shape)} (expected {_torch_shape(want)})")
            continue
        out[path] = value
    missing = [_torch_name(path) for path in flat_expected if path not in seen]
    if missing or unexpected or mis_shaped:
        lines = [f"The {what} does not match its config.json:"]
        if missing:
            lines.append(f"missing tensors ({len(missing)}): " + ", ".join(missing))
        if unexpected:
            lines.append(f"unexpected tensors ({len(unexpected)}): " + ", ".join(unexpected))
        if mis_shaped:
            lines.append(f"mis-shaped tensors ({len(mis_shaped)}): " + ", ".join(mis_shaped))
        lines.append(
            "Check that config.json belongs to these weights (same model class and sizes)."
        )
        raise CheckpointMismatchError("\n".join(lines))
    return unflatten_dict({k: jnp.asarray(v, dtype=dtype) for k, v in out.items()})


_LIST_RE = re.compile(
    r"^(down_blocks|up_blocks|resnets|attentions|downsamplers|upsamplers|transformer_blocks"
    r"|to_out|net|layers)_(\d+)$"
)


def _torch_name(path: tuple[str, ...]) -> str:
    """The PyTorch name of a Flax parameter path (inverse of `torch_key_to_path`)."""
    parts = [_LIST_RE.sub(r"\1.\2", p) for p in path[:-1]]
    leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(path[-1], path[-1])
    return ".".join([*parts, leaf])


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(flax_shape) == 4:
        return (flax_shape[3], flax_shape[2], flax_shape[0], flax_shape[1])
    if len(flax_shape) == 2:
        return flax_shape[::-1]
    return flax_shape


def expected_params(module: Any, *inputs: Any) -> dict[str, Any]:
    """The parameter shapes of a Linen `module` called on `inputs`, without allocating them."""
    return jax.eval_shape(lambda: module.init(jax.random.key(0), *inputs))["params"]
