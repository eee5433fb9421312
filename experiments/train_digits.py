"""Train the built-in digits model: a class-conditional UNet2DModel (the Flax port) on the
16x16 handwritten digits, exported with `rexjax.models.save_unet` in diffusers' layout.

- epsilon prediction on the DDPM schedule (linear betas 1e-4..0.02, 1000 steps): the loss is
  E ||eps_theta(sqrt(abar_n) x0 + sqrt(1 - abar_n) eps, n, y) - eps||^2, n uniform in 0..999;
- classifier-free guidance training (Ho & Salimans 2022): the label is replaced by the null
  label 10 with probability `--p-uncond` (0.1);
- optax AdamW, linear warm-up then cosine decay, gradient clipping at norm 1, and an EMA of
  the weights (decay min(0.999, (1 + k)/(10 + k)) at step k); the EMA weights are exported;
- deterministic from `--seed`: step k draws its batch, noise, timesteps and label drop from
  `fold_in(key(seed), k)`, so a resumed run (`--resume`) reproduces an uninterrupted one.

    python experiments/train_digits.py                          # steps 1-600, then
    python experiments/train_digits.py --resume --steps 2400    # on to 2400: the committed
                                                                # checkpoint (the cosine
                                                                # schedule restarts at 600)
    python experiments/train_digits.py --quick --out /tmp/d  # smoke test
"""

import argparse
import time
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from common import Log, header, key, out_dir, progress, pyplot, write_csv
from rexjax.models import alphas_cumprod, build_unet_module, save_unet
from rexjax.models._digits import (
    CHECKPOINT_DIR,
    DIGITS_SCHEDULER_CONFIG,
    DIGITS_UNET_CONFIG,
    NULL_LABEL,
    train_split,
)
from rexjax.models._unet import UNet, _dummy_inputs


def make_optimiser(args) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.lr, args.warmup, args.steps, end_value=args.lr * 0.02
    )
    return optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=args.weight_decay)
    )


def make_step(module, optimiser, images, labels, args):
    abar = jnp.asarray(alphas_cumprod(DIGITS_SCHEDULER_CONFIG), jnp.float32)
    n_train = abar.shape[0]

    def loss_fn(params, k):
        kb, kn, kt, kd = jax.random.split(k, 4)
        idx = jax.random.randint(kb, (args.batch,), 0, images.shape[0])
        x0 = images[idx]
        y = labels[idx]
        y = jnp.where(jax.random.uniform(kd, (args.batch,)) < args.p_uncond, NULL_LABEL, y)
        n = jax.random.randint(kt, (args.batch,), 0, n_train)
        eps = jax.random.normal(kn, x0.shape, jnp.float32)
        a = abar[n][:, None, None, None]
        xt = jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * eps
        pred = module.apply({"params": params}, xt, n.astype(jnp.float32), y)
        return jnp.mean((pred - eps) ** 2)

    @jax.jit
    def step(state, k):
        params, opt_state, ema, i = state["params"], state["opt"], state["ema"], state["step"]
        loss, grads = jax.value_and_grad(loss_fn)(params, k)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        decay = jnp.minimum(args.ema, (1.0 + i) / (10.0 + i))
        ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
        return {"params": params, "opt": opt_state, "ema": ema, "step": i + 1}, loss

    return step


def save_state(path: Path, state, losses: list[float]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "state.msgpack.tmp"
    tmp.write_bytes(flax.serialization.to_bytes(state))
    tmp.replace(path / "state.msgpack")
    np.save(path / "losses.npy", np.asarray(losses, np.float32))


def load_state(path: Path, template) -> tuple[dict, list[float]]:
    state = flax.serialization.from_bytes(template, (path / "state.msgpack").read_bytes())
    losses = np.load(path / "losses.npy").tolist()
    if len(losses) != int(state["step"]):
        raise ValueError(f"{path}: {len(losses)} losses logged for step {int(state['step'])}.")
    return state, losses


def export(module, params, folder: Path) -> None:
    save_unet(
        UNet(module, params), folder, scheduler_config=DIGITS_SCHEDULER_CONFIG, sample_size=16
    )


def smooth(losses: np.ndarray, width: int) -> np.ndarray:
    width = max(1, min(width, len(losses)))
    return np.convolve(losses, np.ones(width) / width, mode="valid")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--p-uncond", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=50)
    p.add_argument("--state", type=Path, default=Path(__file__).parent / ".digits_train_state")
    p.add_argument("--export", type=Path, default=CHECKPOINT_DIR / "digits")
    p.add_argument("--resume", action="store_true", help="continue from --state")
    p.add_argument(
        "--stop-after", type=int, default=None, help="stop after this step (resume later)"
    )
    p.add_argument(
        "--export-only",
        action="store_true",
        help="export the EMA weights of the saved state (e.g. of a running job) and stop",
    )
    p.add_argument("--bench", type=int, default=0, help="only time this many steps")
    p.add_argument("--quick", action="store_true", help="smoke test: 4 steps, batch 8")
    p.add_argument("--out", default=None, help="results folder (default experiments/results)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.warmup, args.save_every = 4, 8, 2, 2
    out = out_dir(args.out)
    if args.quick:
        args.state, args.export = out / "digits_train_state", out / "digits"
    # Compiled steps are cached on disk, so a resumed or repeated run skips the compilation.
    jax.config.update("jax_compilation_cache_dir", str(Path(__file__).parent / ".jax_cache"))
    log = Log()
    log(header("train_digits"))
    log(f"arguments: {vars(args)}")

    images, labels = train_split()
    images = jnp.asarray(images.transpose(0, 2, 3, 1))  # NHWC for the Flax module
    labels = jnp.asarray(labels)
    # random_unet's initialisation (Flax defaults), jitted so that it is compiled once and cached.
    module = build_unet_module(DIGITS_UNET_CONFIG)
    params = jax.jit(module.init)(key(args.seed), *_dummy_inputs(module))["params"]
    unet = UNet(module, params)
    n_params = sum(x.size for x in jax.tree.leaves(unet.params))
    log(f"{images.shape[0]} training images; UNet2DModel with {n_params:,} parameters")
    optimiser = make_optimiser(args)
    state = {
        "params": unet.params,
        "opt": optimiser.init(unet.params),
        "ema": unet.params,
        "step": jnp.asarray(0, jnp.int32),
    }
    losses: list[float] = []
    if args.resume or args.export_only:
        state, losses = load_state(args.state, state)
        log(f"resumed at step {int(state['step'])} from {args.state}")
    if args.export_only:
        export(unet.module, state["ema"], args.export)
        log(f"EMA weights at step {int(state['step'])} exported to {args.export}")
        return
    step = make_step(unet.module, optimiser, images, labels, args)
    root = jax.random.fold_in(key(args.seed), 1)

    if args.bench:
        t0 = time.perf_counter()
        state, _ = step(state, root)  # compile
        jax.block_until_ready(state)
        log(f"first step (compilation) {time.perf_counter() - t0:.0f} s")
        t0 = time.perf_counter()
        for i in range(args.bench):
            state, loss = step(state, jax.random.fold_in(root, i))
        jax.block_until_ready(loss)
        log(f"{(time.perf_counter() - t0) / args.bench * 1e3:.0f} ms/step at batch {args.batch}")
        return

    start = int(state["step"])
    stop = args.steps if args.stop_after is None else min(args.stop_after, args.steps)
    t0 = time.perf_counter()
    bar = progress(range(start, stop), desc="train", total=stop - start)
    for i in bar:
        state, loss = step(state, jax.random.fold_in(root, i))
        losses.append(float(loss))
        if (i + 1) % 50 == 0 or i + 1 == args.steps:
            recent = float(np.mean(losses[-50:]))
            log(f"step {i + 1}: loss (mean of last 50) {recent:.4f}")
        if (i + 1) % args.save_every == 0 or i + 1 == stop:
            save_state(args.state, state, losses)
    if stop < args.steps:
        log(f"stopped after step {stop}; continue with --resume")
        return
    elapsed = time.perf_counter() - t0
    per_step = elapsed / max(1, args.steps - start)
    log(f"{args.steps - start} steps in {elapsed / 60:.1f} min ({per_step * 1e3:.0f} ms/step)")
    final = float(np.mean(losses[-200:]))
    log(f"final loss (mean of the last 200 steps): {final:.4f}")

    export(unet.module, state["ema"], args.export)
    log(f"EMA weights exported to {args.export}")
    tag = "_quick" if args.quick else ""
    write_csv(
        [{"step": i + 1, "loss": v} for i, v in enumerate(losses)],
        out / f"train_digits_loss{tag}.csv",
    )
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.3, alpha=0.4, label="per step")
        s = smooth(np.asarray(losses), 100)
        ax.plot(np.arange(len(losses) - len(s) + 1, len(losses) + 1), s, label="mean of 100")
        ax.set(xlabel="step", ylabel="epsilon MSE", yscale="log", title="digits UNet training")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"train_digits_loss{tag}.png", dpi=120)
    else:
        log("matplotlib not installed: no loss plot")
    log.save(out / f"train_digits_log{tag}.txt")


if __name__ == "__main__":
    main()
