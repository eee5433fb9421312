"""Check the built-in digits model: class accuracy (by the evaluation classifier) and
FD-digits of its samples, against the floors of real data.

Samples: `--per-class` per label, 50-step DDIM (`rx.Princeps(diffrax.Euler(), "data")`, the
probability-flow ODE on a log-SNR grid from t=1 to t=1/1000) in float32, for each guidance scale
in `--guidance` (1.0 is the plain conditional model). FD-digits is the Frechet distance between
Gaussians fitted to the classifier's 64 penultimate features of the samples and of the test
split. Floors: the test split against the training split, and against a random training subset
of the same size as the samples (FD is biased upwards at small sizes, so the size-matched floor
is the fair comparison).

    python experiments/eval_digits.py
    python experiments/eval_digits.py --quick --out /tmp/e   # smoke test
"""

import argparse
import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import rexjax as rx
from common import (
    Log,
    header,
    key,
    markdown_table,
    out_dir,
    progress,
    pyplot,
    write_csv,
    write_markdown,
)
from rexjax.models import pretrained
from rexjax.models._digits import train_split
from rexjax.models._fd import feature_statistics, frechet_distance


def fd(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=20)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.5])
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke test: 1 per class, 3 steps")
    p.add_argument("--out", default=None, help="results folder (default experiments/results)")
    args = p.parse_args(argv)
    if args.quick:
        args.per_class, args.steps, args.guidance, args.batch = 1, 3, [2.5], 10
    out = out_dir(args.out)
    tag = "_quick" if args.quick else ""
    log = Log()
    log(header("eval_digits"))
    log(f"arguments: {vars(args)}")

    classifier = pretrained.digits_classifier()
    features = eqx.filter_jit(lambda c, x: c.features(x))
    predict = eqx.filter_jit(lambda c, x: c.predict(x))
    x_test, y_test = pretrained.digits_test_split()
    x_train, _ = train_split()
    f_test = np.asarray(features(classifier, x_test))
    f_train = np.asarray(features(classifier, x_train))
    n = 10 * args.per_class
    subset = np.random.default_rng(args.seed).choice(len(x_train), n, replace=False)
    floors = {
        "test vs train (1437)": fd(f_test, f_train),
        f"test vs {n} train images": fd(f_test, f_train[subset]),
    }
    for name, value in floors.items():
        log(f"FD-digits floor, {name}: {value:.3f}")

    labels = np.repeat(np.arange(10, dtype=np.int32), args.per_class)
    noise = jax.random.normal(key(args.seed), (n, *pretrained.IMAGE_SHAPE), jnp.float32)
    solver = rx.Princeps(diffrax.Euler(), "data")
    sample = eqx.filter_jit(rx.sample)
    rows, grids = [], {}
    for w in args.guidance:
        term = pretrained.digits_term(guidance_scale=None if w == 1.0 else w)
        ts = rx.log_snr_grid(term.schedule, 1.0, term.schedule.t_min, args.steps)
        ts = ts.astype(jnp.float32)
        t0 = time.perf_counter()
        chunks = []
        for i in progress(range(0, n, args.batch), desc=f"w={w}"):
            chunks.append(
                sample(term, solver, noise[i : i + args.batch], ts, labels[i : i + args.batch])
            )
        x = np.asarray(jnp.concatenate(chunks))
        seconds = time.perf_counter() - t0
        accuracy = float(np.mean(np.asarray(predict(classifier, x)) == labels))
        f = np.asarray(features(classifier, x))
        row = {
            "guidance": w,
            "steps": args.steps,
            "samples": n,
            "class_accuracy": accuracy,
            "fd_digits": fd(f, f_test),
            "seconds": seconds,
        }
        rows.append(row)
        grids[w] = x
        log(
            f"guidance {w}: class accuracy {accuracy:.3f}, FD-digits {row['fd_digits']:.3f} "
            f"({n} samples, {args.steps} steps, {seconds:.0f} s)"
        )
    real_accuracy = float(np.mean(np.asarray(predict(classifier, x_test)) == y_test))
    write_csv(rows, out / f"eval_digits{tag}.csv")
    table = markdown_table(
        [
            [
                r["guidance"],
                r["steps"],
                r["samples"],
                f"{r['class_accuracy']:.3f}",
                f"{r['fd_digits']:.2f}",
            ]
            for r in rows
        ]
        + [["real test split", "-", len(x_test), f"{real_accuracy:.3f}", "0"]],
        ["guidance", "steps", "samples", "class accuracy", "FD-digits vs test"],
    )
    floor_table = markdown_table(
        [[k, f"{v:.2f}"] for k, v in floors.items()], ["FD-digits floor", "value"]
    )
    write_markdown(
        out / f"eval_digits{tag}.md",
        "Built-in digits model: samples vs real digits",
        [("Run", log.lines[0]), ("Samples (50-step DDIM)", table), ("Floors", floor_table)],
    )
    plt = pyplot()
    if plt is not None:
        fig, axes = plt.subplots(len(grids), 1, figsize=(10, 2.2 * len(grids)), squeeze=False)
        for ax, (w, x) in zip(axes[:, 0], grids.items(), strict=True):
            shown = x.reshape(10, args.per_class, 16, 16)[:, : min(8, args.per_class)]
            tiles = shown.transpose(1, 2, 0, 3).reshape(shown.shape[1] * 16, 160)
            ax.imshow(tiles, cmap="gray_r", vmin=-1, vmax=1)
            ax.set_title(f"guidance {w}: columns are the labels 0-9", fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out / f"eval_digits{tag}.png", dpi=120)
    log.save(out / f"eval_digits_log{tag}.txt")


if __name__ == "__main__":
    main()
