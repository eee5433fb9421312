"""Discrete noise schedules of diffusers schedulers (`scheduler_config.json`)."""

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from ._bridge import read_json


_MODEL_TYPES = {"epsilon": "noise", "v_prediction": "velocity", "sample": "data"}
_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def load_scheduler_config(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A scheduler config from a dict, a `scheduler_config.json` file, a folder holding one,
    or a pipeline folder with a `scheduler/` subfolder."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    for candidate in (
        path,
        path / "scheduler_config.json",
        path / "scheduler" / "scheduler_config.json",
    ):
        if candidate.is_file():
            return read_json(candidate)
    raise FileNotFoundError(
        f"No scheduler_config.json at {str(path)!r} (looked in the folder and in scheduler/)."
    )


def _squaredcos_betas(n: int) -> np.ndarray:
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)])


def alphas_cumprod(config: Mapping[str, Any]) -> Float[np.ndarray, " N"]:
    r"""The training schedule $\bar\alpha_n = \prod_{k \le n}(1 - \beta_k)$ of a diffusers
    DDPM/DDIM/PNDM/... scheduler config, computed in float64 with diffusers' formulas.

    **Arguments:**

    - `config`: the scheduler config (`beta_schedule` `"linear"`, `"scaled_linear"` or
        `"squaredcos_cap_v2"`, or `trained_betas`; `beta_start`, `beta_end`,
        `num_train_timesteps`).

    **Returns:**

    `alphas_cumprod`, float64 of shape `(num_train_timesteps,)`. (diffusers computes it in
    float32; the two agree to float32 round-off.)
    """
    n = int(config.get("num_train_timesteps", 1000))
    if config.get("rescale_betas_zero_snr", False):
        raise ValueError(
            "rescale_betas_zero_snr=True gives alphas_cumprod[-1] = 0 (infinite noise level), "
            "which a VP schedule in log-SNR cannot represent; it is not supported."
        )
    if config.get("trained_betas") is not None:
        betas = np.asarray(config["trained_betas"], dtype=np.float64)
    else:
        schedule = config.get("beta_schedule", "linear")
        start = float(config.get("beta_start", 0.0001))
        end = float(config.get("beta_end", 0.02))
        if schedule == "linear":
            betas = np.linspace(start, end, n, dtype=np.float64)
        elif schedule == "scaled_linear":
            betas = np.linspace(start**0.5, end**0.5, n, dtype=np.float64) ** 2
        elif schedule == "squaredcos_cap_v2":
            betas = _squaredcos_betas(n)
        else:
            raise ValueError(
                f"beta_schedule={schedule!r} is not supported; use one of {list(_BETA_SCHEDULES)}"
                " or trained_betas."
            )
    if betas.shape != (n,):
        raise ValueError(f"trained_betas has shape {betas.shape}, expected ({n},).")
    return np.cumprod(1.0 - betas)


def model_type(config: Mapping[str, Any]) -> str:
    """rexjax's `model_type` for the config's `prediction_type` (`"epsilon"` -> `"noise"`,
    `"v_prediction"` -> `"velocity"`, `"sample"` -> `"data"`)."""
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in _MODEL_TYPES:
        raise ValueError(
            f"prediction_type={prediction!r} is not supported; use one of {list(_MODEL_TYPES)}."
        )
    return _MODEL_TYPES[prediction]
