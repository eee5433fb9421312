"""Real-image editing with exact inversion: VAE-encode an image, invert it with Rex under a
source prompt, then regenerate under a target prompt, all in JAX (rexjax + rexjax.models).

    python experiments/edit_image.py --pipeline PATH/TO/stable-diffusion-v1-5 \
        --image cat.png --source "a photo of a cat" --target "a photo of a dog"

Without `--pipeline` a tiny random Stable-Diffusion-shaped pipeline (UNet, VAE, CLIP text
encoder, tokenizer, DDIM scheduler config) is written with diffusers/transformers
`save_pretrained` into a temporary folder, so the script runs offline; its "edits" are
meaningless but every step of the real pipeline runs. Without `--image` a colour gradient
with a checkerboard is used. Prints the round-trip error under the source prompt (latent and
pixel space) and writes the input, round-trip and edited images (PNG) and the arrays (NPZ).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import diffrax
import jax.numpy as jnp
import numpy as np

import rexjax as rx
import rexjax.models as rm


def write_tiny_pipeline(folder: Path) -> Path:
    """A random SD-1.5-shaped pipeline folder, tiny widths, byte-level tokenizer."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from rexjax.models._tokenizer import bytes_to_unicode

    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=16,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=4,
        cross_attention_dim=32,
    ).save_pretrained(folder / "unet")
    AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
        latent_channels=4,
    ).save_pretrained(folder / "vae")
    # Byte-level vocabulary without merges: 512 byte tokens, then BOS and EOS.
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    tok = folder / "tokenizer"
    tok.mkdir(parents=True)
    (tok / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    (tok / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=len(vocab) - 2,
            eos_token_id=len(vocab) - 1,
            pad_token_id=len(vocab) - 1,
        )
    ).save_pretrained(folder / "text_encoder")
    DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False
    ).save_pretrained(folder / "scheduler")
    return folder


def test_image(size: int) -> np.ndarray:
    """A colour gradient with a checkerboard, `(3, size, size)` in [-1, 1]."""
    u = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(u, u, indexing="ij")
    checker = np.sign(np.sin(8 * np.pi * xx) * np.sin(8 * np.pi * yy))
    return np.stack([xx, yy, 0.5 * checker]).astype(np.float32)


def read_image(path: str, size: int) -> np.ndarray:
    from PIL import Image

    image = Image.open(path).convert("RGB").resize((size, size))
    return (np.asarray(image, np.float32) / 127.5 - 1.0).transpose(2, 0, 1)


def to_uint8(image) -> np.ndarray:
    array = np.asarray(image, np.float32).transpose(1, 2, 0)
    return np.clip((array + 1) * 127.5, 0, 255).astype(np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", help="Stable Diffusion 1.x pipeline folder")
    parser.add_argument("--image", help="input image (default: a generated test image)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--source", default="a colourful checkerboard")
    parser.add_argument("--target", default="a colourful checkerboard made of glass")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--solver", default="euler", choices=["euler", "midpoint", "tsit5"])
    parser.add_argument("--coupling", type=float, default=0.999)
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale (default off)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--out", default="experiments/results/edit_image")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.pipeline) if args.pipeline else write_tiny_pipeline(Path(tmp))
        pipe = rm.load_pipeline(folder, dtype=args.dtype)
    image = read_image(args.image, args.size) if args.image else test_image(args.size)

    ids = pipe.tokenizer([args.source, args.target, ""])
    source, target, empty = (e[None] for e in pipe.text_encoder(ids).astype(jnp.float32))
    if args.guidance is None:
        source_args, target_args = source, target
    else:
        source_args, target_args = (source, empty), (target, empty)
    term = rm.diffusion_term(pipe.unet, pipe.scheduler_config, guidance_scale=args.guidance)
    base = {"euler": diffrax.Euler(), "midpoint": diffrax.Midpoint(), "tsit5": diffrax.Tsit5()}
    solver = rx.Rex(base[args.solver], prediction="data", coupling=args.coupling)
    schedule = term.schedule
    ts = rx.log_snr_grid(schedule, schedule.t_max, schedule.t_min, args.steps)

    start = time.perf_counter()
    mean, _ = pipe.vae.encode(jnp.asarray(image)[None])
    z0 = (mean * pipe.vae.scaling_factor).astype(jnp.float32)
    latent = rx.invert(term, solver, z0, ts, source_args)
    z_round = rx.sample(term, solver, latent, ts, source_args)
    z_edit = rx.sample(term, solver, latent, ts, target_args)
    decode = pipe.vae.decode
    x_recon = decode(z0 / pipe.vae.scaling_factor)[0]
    x_round = decode(z_round / pipe.vae.scaling_factor)[0]
    x_edit = decode(z_edit / pipe.vae.scaling_factor)[0]
    x_edit.block_until_ready()
    elapsed = time.perf_counter() - start

    latent_err = float(jnp.abs(z_round - z0).max() / jnp.abs(z0).max())
    pixel_err = float(jnp.abs(x_round - x_recon).max() / jnp.abs(x_recon).max())
    print(
        f"pipeline: {args.pipeline or 'tiny random (offline)'}; {args.steps} {args.solver} "
        f"steps, coupling {args.coupling}, guidance {args.guidance}, dtype {args.dtype}"
    )
    print(
        f"round trip under the source prompt: latent max rel. error {latent_err:.2e}, "
        f"decoded image max rel. error {pixel_err:.2e}"
    )
    print(
        f"latent std at t_max {float(jnp.std(latent.y)):.3f}; edit changed the latent by "
        f"{float(jnp.abs(z_edit - z0).max() / jnp.abs(z0).max()):.2e} (relative)"
    )
    print(f"wall time (incl. compilation): {elapsed:.1f} s")

    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, x in (("input", image), ("vae", x_recon), ("round_trip", x_round), ("edit", x_edit)):
        plt.imsave(out / f"{name}.png", to_uint8(x))
    np.savez(
        out / "arrays.npz",
        image=image,
        z0=np.asarray(z0),
        latent=np.asarray(latent.y),
        z_round=np.asarray(z_round),
        z_edit=np.asarray(z_edit),
    )
    print(f"wrote {out}/{{input,vae,round_trip,edit}}.png and arrays.npz")


if __name__ == "__main__":
    main()
