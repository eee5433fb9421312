"""Time the Flax SD 1.5 UNet (rexjax.models) against diffusers' PyTorch UNet2DConditionModel.

Same architecture (the SD 1.5 `unet/config.json`, or a reduced width with `--small`), same
random weights (diffusers initialises, `save_pretrained`, rexjax loads), same inputs, batch and
dtype. JAX is jitted; compilation and one warm-up call are excluded for both; every call ends
with `block_until_ready` (JAX). The two frameworks' calls are interleaved so that load from
other processes affects both alike. Prints the medians and the ratio, as a Markdown table.

    python experiments/bench_sd15_unet.py --size 32 --batch 1 --repeats 5
"""

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import torch
from diffusers import UNet2DConditionModel

import rexjax.models as rm


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="latent height and width")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="block widths / 4, 16 groups")
    args = parser.parse_args()

    config = {k: v for k, v in rm.SD15_UNET_CONFIG.items() if k != "_class_name"}
    if args.small:
        config["block_out_channels"] = tuple(c // 4 for c in config["block_out_channels"])
        config["norm_num_groups"] = 16
    torch.manual_seed(0)
    model = UNet2DConditionModel(**config).eval()
    n_params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        unet = rm.load_unet(folder, dtype=args.dtype)
    torch_dtype = getattr(torch, args.dtype)
    model = model.to(torch_dtype)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 4, args.size, args.size)).astype(np.float32)
    context = rng.standard_normal((args.batch, 77, 768)).astype(np.float32)
    t = 500

    x_j, c_j = jnp.asarray(x, args.dtype), jnp.asarray(context, args.dtype)
    fn = eqx.filter_jit(lambda u, x, c: u(x, float(t), c))
    start = time.perf_counter()
    fn(unet, x_j, c_j).block_until_ready()
    compile_s = time.perf_counter() - start
    x_t, c_t = torch.from_numpy(x).to(torch_dtype), torch.from_numpy(context).to(torch_dtype)

    def run_torch():
        with torch.no_grad():
            return model(x_t, t, c_t).sample

    def run_jax():
        return fn(unet, x_j, c_j).block_until_ready()

    run_torch()
    run_jax()
    times = {"jax": [], "torch": []}
    for _ in range(args.repeats):
        for name, f in (("jax", run_jax), ("torch", run_torch)):
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    out_j = np.asarray(run_jax(), np.float64)
    out_t = run_torch().double().numpy()
    err = np.abs(out_j - out_t).max() / np.abs(out_t).max()

    med = {k: statistics.median(v) for k, v in times.items()}
    print("# SD 1.5 UNet forward: rexjax (Flax, jit) vs diffusers (PyTorch)\n")
    print(f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}")
    print(
        f"- machine: {platform.machine()} {platform.processor() or ''} "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the start"
    )
    print(
        f"- jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )
    print(
        f"- architecture: {'SD 1.5 widths / 4' if args.small else 'full SD 1.5 config'}, "
        f"{n_params:,} parameters; dtype {args.dtype}"
    )
    print(f"- input: batch {args.batch}, latents 4x{args.size}x{args.size}, 77 text tokens")
    print(f"- JAX compile + first call: {compile_s:.1f} s (excluded)")
    print(f"- max relative difference of the outputs: {err:.1e}\n")
    print("| framework | median s/call | all repeats (s) |")
    print("|---|---|---|")
    for name in ("jax", "torch"):
        shown = ", ".join(f"{s:.3f}" for s in times[name])
        print(f"| {name} | {med[name]:.3f} | {shown} |")
    print(f"\nratio torch / jax = {med['torch'] / med['jax']:.2f} (> 1: JAX faster)")


if __name__ == "__main__":
    main()
