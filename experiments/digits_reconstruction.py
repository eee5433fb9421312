"""Reconstruction of real digits on the built-in model (the Rex paper's Fig. 3 analogue).

Held-out test digits are inverted under their own class (the conditional model, no guidance)
from t=1e-3 to t=1 on log-SNR grids of 10, 20 and 50 steps and regenerated on the same grid,
in float32. Per (method, steps):

- round trip: MSE and max |x0' - x0| of data -> latent -> data;
- latent accuracy: relative RMS of the encoded latent against the probability-flow latent of the
  same digit, computed in float64 by Princeps(Tsit5, noise prediction) stepped from data to
  noise on a 400-step log-SNR grid (its own error is estimated against 200 steps and
  printed). Reverse-SDE latents are tied to their Brownian path, not to the PF-ODE: no latent
  accuracy for them.

Methods: every one of `digits_solvers.all_methods()`; Princeps rows are inverted by stepping the
scheme backwards (`NearReversible`: naive for Midpoint, near-reversible for EES27).

Run: `python experiments/digits_reconstruction.py [--images 200] [--methods ...]`. Writes
`results/digits_reconstruction.{csv,md,png}` and a log.
"""

import argparse
import os
import sys
import time
from pathlib import Path


os.environ.setdefault("EQX_ON_ERROR", "nan")

import jax  # noqa: E402


jax.config.update("jax_enable_x64", True)
import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


sys.path.insert(0, str(Path(__file__).parent))
import digits_solvers as ds  # noqa: E402

import rexjax as rx  # noqa: E402
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


def pf_latent(x, labels, steps, batch):
    """The probability-flow latent of `x` at t=1: float64 Princeps(Tsit5, noise) stepped from
    t=1e-3 to t=1 on a `steps`-step log-SNR grid."""
    term = ds.load_term(None, jnp.float64)
    solver = rx.NearReversible(diffrax.Tsit5(), "noise")
    ts = rx.log_snr_grid(term.schedule, ds.T_START, ds.T_END, steps)
    enc = jax.jit(lambda x, y: rx.invert(term, solver, x, ts, y).y)
    return ds.in_batches(
        lambda a, b: enc(jnp.asarray(a, jnp.float64), jnp.asarray(b)), x, labels, batch=batch
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(ds.all_methods()))
    parser.add_argument("--steps", default="10,20,50")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--ref-steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--report", action="store_true", help="only rewrite the table and plot from the CSV"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    opts = parser.parse_args()
    opts.resume |= opts.report
    if opts.quick:
        opts.images, opts.steps, opts.ref_steps, opts.methods = 4, "3", 8, "DDIM,Rex Euler"
    steps = [int(s) for s in opts.steps.split(",")]
    methods = ds.pick(opts.methods)
    out = out_dir(opts.out)
    stem = out / "digits_reconstruction"
    log = Log()
    log(header("digits reconstruction"))
    images, labels = pretrained.digits_test_split()
    x0, y0 = np.asarray(images[: opts.images]), np.asarray(labels[: opts.images])
    term = ds.load_term(None)
    tol = ds.brownian_tol(term.schedule)
    log(
        f"{len(x0)} held-out digits, conditional model (no guidance), float32, log-SNR grids "
        "t=1 -> 1e-3"
    )

    rows = read_csv(f"{stem}.csv") if opts.resume and Path(f"{stem}.csv").exists() else []
    done = {(r["method"], r["steps"]) for r in rows}
    cells = [(m, n) for m in methods for n in steps if (m.name, n) not in done]
    if opts.report:
        cells = []
    ref_err = rows[0]["ref_change"] if rows else float("nan")
    if cells:
        t0 = time.perf_counter()
        ref = pf_latent(x0, y0, opts.ref_steps, opts.batch)
        ref_half = pf_latent(x0, y0, opts.ref_steps // 2, opts.batch)
        ref_err = float(np.linalg.norm(ref_half - ref) / np.linalg.norm(ref))
        log(
            f"PF-ODE reference latent: float64 Princeps(Tsit5, noise), {opts.ref_steps} steps; "
            f"relative RMS change from {opts.ref_steps // 2} steps {ref_err:.2e} "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    x32, lab = jnp.asarray(x0, jnp.float32), jnp.asarray(y0)
    for m, n in progress(cells, "cells"):
        ts = jnp.asarray(ds.grid(term.schedule, n))
        k = key(11) if m.sde else None
        t1 = time.perf_counter()
        lat, state = ds.invert_loop(m, term, x32, ts, n, lab, k, tol)
        xr, _ = ds.sample_loop(m, term, lat, ts, n, lab, k, tol, state=state)
        lat, xr = np.asarray(lat, np.float64), np.asarray(xr, np.float64)
        err = xr - x0
        lat_rel = float("nan") if m.sde else float(np.linalg.norm(lat - ref) / np.linalg.norm(ref))
        row = dict(
            method=m.name,
            steps=n,
            nfe_roundtrip=2 * m.nfe * n,
            rt_mse=float(np.mean(err**2)) if np.all(np.isfinite(err)) else float("inf"),
            rt_max=float(np.max(np.abs(err))) if np.all(np.isfinite(err)) else float("inf"),
            latent_rel=lat_rel,
            latent_std=float(np.std(lat)),
            wall_s=time.perf_counter() - t1,
            ref_change=ref_err,
        )
        rows.append(row)
        log(
            f"{m.name:>18s} {n:3d} steps: round-trip MSE {row['rt_mse']:.2e} max "
            f"{row['rt_max']:.2e}, latent rel {lat_rel:.2e}"
        )
        write_csv(rows, f"{stem}.csv")
    report(rows, stem, log, ref_err, opts.ref_steps)
    log.save(f"{stem}_log.txt", append=opts.resume and not opts.report)


def report(rows, stem, log, ref_err, ref_steps):
    steps = sorted({r["steps"] for r in rows})
    names = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["method"], r["steps"]): r for r in rows}
    head = ["method"] + [f"RT MSE@{n}" for n in steps] + [f"latent rel@{n}" for n in steps]
    table = [
        [name]
        + [cell.get((name, n), {}).get("rt_mse", "") for n in steps]
        + [cell.get((name, n), {}).get("latent_rel", "") for n in steps]
        for name in names
    ]
    body = markdown_table(table, head)
    note = (
        "Float32 round trip (MSE over pixels in [-1, 1]) and the encoded latent's relative RMS "
        f"error against the float64 PF-ODE latent ({ref_steps}-step Princeps Tsit5; its own "
        f"relative change from half the steps: {ref_err:.1e}). nan: SDE latents (tied to "
        "their Brownian path)."
    )
    write_markdown(
        f"{stem}.md",
        "Digits reconstruction",
        [("Run", log.lines[0]), ("Results", note + "\n\n" + body)],
    )
    log(body)
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        xs = [n for n in steps if (name, n) in cell]
        style = "-" if name.startswith("Rex") else "--"
        axes[0].plot(xs, [cell[name, n]["rt_mse"] for n in xs], style, marker="o", label=name)
        axes[1].plot(xs, [cell[name, n]["latent_rel"] for n in xs], style, marker="o")
    axes[0].set(xscale="log", yscale="log", xlabel="steps", ylabel="round-trip MSE (float32)")
    axes[1].set(xscale="log", yscale="log", xlabel="steps", ylabel="latent rel. error")
    for ax in axes:
        ax.set_xticks(steps, [str(n) for n in steps])
        ax.minorticks_off()
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("Digits reconstruction (held-out digits, float32)")
    fig.tight_layout()
    fig.savefig(f"{stem}.png", dpi=120)


if __name__ == "__main__":
    main()
