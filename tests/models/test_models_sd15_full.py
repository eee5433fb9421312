"""The full-size Stable Diffusion 1.5 UNet: random diffusers weights, saved, loaded, compared.

Slow (about 3.4 GB of float32 weights, twice in memory): run with `pytest -m slow`.
"""

import jax


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

import gc  # noqa: E402

import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from model_helpers import rel_err  # noqa: E402

import rexjax.models as rm  # noqa: E402


@pytest.mark.slow
def test_sd15_unet_full_size_parity(tmp_path):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    config = {k: v for k, v in rm.SD15_UNET_CONFIG.items() if not k.startswith("_")}
    model = diffusers.UNet2DConditionModel(**config).eval()
    assert sum(p.numel() for p in model.parameters()) == 859_520_964
    model.save_pretrained(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 16, 16)).astype(np.float32)
    context = rng.standard_normal((1, 77, 768)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x), 421, torch.from_numpy(context)).sample.numpy()
    del model
    gc.collect()
    unet = rm.load_unet(tmp_path)
    out = eqx.filter_jit(lambda u, x, c: u(x, 421.0, c))(unet, x, context)
    err = rel_err(out, ref)
    print(f"SD1.5 UNet (859,520,964 parameters) max relative error {err:.2e}")
    assert err < 1e-5
