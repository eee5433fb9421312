"""Generation on the built-in digits model (the Rex paper's §5.1 analogue).

Class-conditional sampling with classifier-free guidance (`--guidance`, default 2) from the same
noise for every solver (balanced labels 0..9, noise and Brownian paths from fixed seeds), at
10, 20 and 50 log-SNR steps from t=1 to t=1e-3, float32. Per (method, steps): FD-digits,
precision / recall / density / coverage (k=5) against the held-out test split, class accuracy
by the built-in classifier, NFE and wall time. Methods: DDIM, EDICT, BDIA, O-BELM,
DPM-Solver++(2M), Princeps (Midpoint, EES27) and Rex (data prediction, coupling 0.999; ODE:
Euler, Midpoint, RK4, EES25, EES27; reverse SDE: Euler–Maruyama, ShARK), see
`digits_solvers.py`.

Run: `python experiments/digits_generation.py [--samples 2000 | --full] [--methods ...]
[--steps 10,20,50] [--resume]`. Writes `results/digits_generation.{csv,md,png}` and a log.
`--resume` keeps the (method, steps) cells already in the CSV (a long run can be split).
"""

import argparse
import os
import sys
import time
from pathlib import Path


os.environ.setdefault("EQX_ON_ERROR", "nan")  # a diverging method is recorded, not fatal

import jax  # noqa: E402


jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


sys.path.insert(0, str(Path(__file__).parent))
import digits_eval as de  # noqa: E402
import digits_solvers as ds  # noqa: E402

from common import (  # noqa: E402
    Log,
    header,
    key,
    markdown_table,
    out_dir,
    progress,
    pyplot,
    read_csv,
    write_csv,
    write_markdown,
)
from rexjax.models import pretrained  # noqa: E402


def reference_rows(ev, images, labels, n):
    """The floor of the metrics at `n` samples (at most half the test split): `n` test digits
    (a fixed random subset) against the whole split. FD is biased upwards at small `n`, so
    cells are compared with this floor at the same `n`."""
    n = min(n, len(images) // 2)
    idx = np.random.default_rng(0).permutation(len(images))[:n]
    m = ev.generation(images[idx], labels[idx])
    return dict(method=f"test split ({n} of {len(images)})", steps=0, nfe=0, **m, wall_s=0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(ds.all_methods()))
    parser.add_argument("--steps", default="10,20,50")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--full", action="store_true", help="10,000 samples per cell")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--report", action="store_true", help="only rewrite the table and plot from the CSV"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny sizes")
    parser.add_argument("--out", default=None)
    opts = parser.parse_args()
    opts.resume |= opts.report
    if opts.quick:
        opts.samples, opts.batch, opts.steps, opts.methods = 20, 20, "3", "DDIM"
    samples = 10_000 if opts.full else opts.samples
    steps = [int(s) for s in opts.steps.split(",")]
    methods = ds.pick(opts.methods)
    out = out_dir(opts.out)
    stem = out / "digits_generation"

    log = Log()
    log(header("digits generation"))
    term = ds.load_term(opts.guidance)
    images, labels = pretrained.digits_test_split()
    ev = de.Evaluator(pretrained.digits_classifier(), images)
    n_batches = -(-samples // opts.batch)
    labels_gen = np.arange(samples, dtype=np.int32) % 10
    noise = np.asarray(
        jax.random.normal(key(opts.seed), (samples, *pretrained.IMAGE_SHAPE), jnp.float32)
    )
    tol = ds.brownian_tol(term.schedule)
    log(
        f"{samples} samples per cell (labels 0..9 balanced), CFG scale {opts.guidance}, "
        f"float32, log-SNR grids t=1 -> 1e-3, batches of {opts.batch}; reference: "
        f"{len(images)} held-out test digits"
    )

    rows = read_csv(f"{stem}.csv") if opts.resume and Path(f"{stem}.csv").exists() else []
    done = {(r["method"], r["steps"]) for r in rows}
    if not rows:
        rows.append(reference_rows(ev, images, labels, samples))
        log(f"floor: {rows[0]}")
    cells = [(m, n) for m in methods for n in steps if (m.name, n) not in done]
    if opts.report:
        cells = []
    for m, n in progress(cells, "cells"):
        ts = jnp.asarray(ds.grid(term.schedule, n))
        t0 = time.perf_counter()
        parts = []
        for b in range(n_batches):
            sl = slice(b * opts.batch, (b + 1) * opts.batch)
            k = jax.random.fold_in(key(opts.seed + 1), b) if m.sde else None
            x, _ = ds.sample_loop(
                m, term, jnp.asarray(noise[sl]), ts, n, jnp.asarray(labels_gen[sl]), k, tol
            )
            parts.append(np.asarray(x))
        x = np.concatenate(parts)
        wall = time.perf_counter() - t0
        metrics = ev.generation(x, labels_gen)
        row = dict(method=m.name, steps=n, nfe=m.nfe * n, **metrics, wall_s=wall)
        rows.append(row)
        log(
            f"{m.name:>18s} {n:3d} steps: FD {metrics['fd']:.3f} acc {metrics['accuracy']:.3f} "
            f"P {metrics['precision']:.3f} R {metrics['recall']:.3f} D {metrics['density']:.3f} "
            f"C {metrics['coverage']:.3f} ({wall:.0f} s)"
        )
        write_csv(rows, f"{stem}.csv")
        if n == max(steps) and not opts.quick:
            np.save(out / f"digits_generation_samples_{m.name.replace(' ', '_')}.npy", x[:100])
    write_csv(rows, f"{stem}.csv")
    report(rows, stem, log, samples, opts.guidance)
    log.save(f"{stem}_log.txt", append=opts.resume and not opts.report)


def report(rows, stem, log, samples, guidance):
    steps = sorted({r["steps"] for r in rows if r["steps"] > 0})
    names = list(dict.fromkeys(r["method"] for r in rows if r["steps"] > 0))
    cell = {(r["method"], r["steps"]): r for r in rows}
    floor = next(r for r in rows if r["steps"] == 0)
    head = ["method"] + [f"FD@{n}" for n in steps] + [f"acc@{n}" for n in steps]
    nmax = max(steps)
    head += [f"P@{nmax}", f"R@{nmax}", f"D@{nmax}", f"C@{nmax}", f"NFE@{nmax}"]
    table = []
    for name in names:
        r = [name] + [cell.get((name, n), {}).get("fd", "") for n in steps]
        r += [cell.get((name, n), {}).get("accuracy", "") for n in steps]
        last = cell.get((name, nmax), {})
        r += [last.get(k, "") for k in ("precision", "recall", "density", "coverage", "nfe")]
        table.append(r)
    body = markdown_table(table, head, ".3f")
    note = (
        f"{samples} samples per cell, CFG scale {guidance}, float32. Metric floor "
        f"({floor['method']}, against all of it): FD {floor['fd']:.3f}, "
        f"P {floor['precision']:.3f}, R {floor['recall']:.3f}, D {floor['density']:.3f}, "
        f"C {floor['coverage']:.3f}, "
        f"accuracy {floor['accuracy']:.3f}. NFE counts model evaluations (a guided one once; "
        "it costs two UNet passes)."
    )
    write_markdown(
        f"{stem}.md",
        "Digits generation",
        [("Run", log.lines[0]), ("Results", note + "\n\n" + body)],
    )
    log(body)
    plt = pyplot()
    if plt is None:
        log("matplotlib not installed: no plot")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        xs = [n for n in steps if (name, n) in cell]
        style = "-" if name.startswith("Rex") else "--"
        axes[0].plot(xs, [cell[name, n]["fd"] for n in xs], style, marker="o", label=name)
        axes[1].plot(xs, [cell[name, n]["accuracy"] for n in xs], style, marker="o")
    axes[0].axhline(floor["fd"], color="k", lw=0.8, ls=":", label="test split floor")
    axes[0].set(xscale="log", yscale="log", xlabel="steps", ylabel="FD-digits")
    axes[1].set(xscale="log", xlabel="steps", ylabel="class accuracy")
    for ax in axes:
        ax.set_xticks(steps, [str(n) for n in steps])
        ax.minorticks_off()
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"Digits generation, CFG {guidance}, {samples} samples per cell")
    fig.tight_layout()
    fig.savefig(f"{stem}.png", dpi=120)


if __name__ == "__main__":
    main()
