r"""Editing real digits on the built-in model (the pix2pix / SDEdit analogue).

A held-out digit $x_0$ of class $c$ is inverted under $c$ (the conditional model, no
guidance) from t=1e-3 up to the depth $t_{\rm edit}$ (SDEdit-style partial inversion; 1 is pure
noise) on a log-SNR grid of `--steps` steps, then regenerated on the same grid under another
class $c'$ with classifier-free guidance scale $w$ (no guidance: $w = 1$, the conditional
model). Edit strength grows with the depth and with $w$. Per (method, depth, $w$):

- edit success: the fraction of edits the built-in classifier assigns to $c'$;
- faithfulness: MSE and SSIM (7x7 Gaussian window) of the edit to its source;
- round trip: the MSE of regenerating under $c$ itself (no edit);
- unstable: the fraction of edits with a non-finite or out-of-range pixel (|x| > 3).

Targets: digit $i$ of class $c$ goes to $(c + 1 + (i \bmod 9)) \bmod 10$ (every pair covered).

Methods: DDIM (naive inversion), EDICT, BDIA, O-BELM, Rex Euler, Rex EES27 (data prediction,
coupling 0.999), Rex Dopri5 on an adaptive grid (chosen by a PID-controlled Princeps(Dopri5)
solve from the data to $t_{\rm edit}$, then replayed exactly by the inversion and the
regeneration), NearReversible(EES27), and "ours": the same solvers inverting a *smoothed*
vector field.

Ours (vector-field smoothing for inversion). During inversion only, the noise prediction is
averaged over a neighbourhood of the source class and of the time:
$\bar\epsilon(t, x) = \frac{1}{|\Delta|}\sum_{\delta\in\Delta}[(1-\beta)\hat\epsilon(t_\delta, x, c)
+ \beta\hat\epsilon(t_\delta, x, \varnothing)]$, $t_\delta = t(\lambda(t) + \delta)$ (shifts in
log-SNR, clipped to the schedule), $\varnothing$ the null class. $\beta$ pulls the inverted path
towards the unconditional flow (the latent keeps less of the source class, so an edit needs less
force), the time average damps the field's fast variation along the path. The round trip under
the smoothed field is still exact for Rex (it inverts whatever field it is given); the
regeneration uses the unsmoothed guided target field.

Run: `python experiments/digits_editing.py [--images 100] [--steps 20] [--methods ...]`. Writes
`results/digits_editing.{csv,md,png}`, a grid of examples `digits_editing_examples.png` and a
log.
"""

import argparse
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple


os.environ.setdefault("EQX_ON_ERROR", "nan")

import jax  # noqa: E402


jax.config.update("jax_enable_x64", True)
import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


sys.path.insert(0, str(Path(__file__).parent))
import digits_eval as de  # noqa: E402
import digits_solvers as ds  # noqa: E402

import rexjax as rx  # noqa: E402
from common import (  # noqa: E402
    Log,
    header,
    markdown_table,
    out_dir,
    progress,
    pyplot,
    read_csv,
    write_csv,
    write_markdown,
)
from rexjax._png import image_grid, write_png  # noqa: E402
from rexjax.models import pretrained  # noqa: E402


class SmoothedModel(eqx.Module):
    r"""Ours: the noise prediction averaged over log-SNR shifts `deltas` and mixed with the
    null class by `beta` (see the module docstring). `args`: the class labels."""

    model: object  # the unguided conditional model(t, x, labels)
    schedule: rx.AbstractSchedule
    beta: float = eqx.field(static=True)
    deltas: tuple[float, ...] = eqx.field(static=True)

    def __call__(self, t, x, labels):
        lam = self.schedule.log_snr(t)
        lo, hi = self.schedule.log_snr(ds.T_START), self.schedule.log_snr(ds.T_END)
        null = jnp.full_like(labels, pretrained.NULL_LABEL)
        b = x.shape[0]
        xs, ys, out = [], [], 0.0
        for d in self.deltas:
            t_d = self.schedule.t_from_log_snr(jnp.clip(lam + d, lo, hi)).astype(t.dtype)
            both = self.model(t_d, jnp.concatenate([x, x]), jnp.concatenate([labels, null]))
            out = out + (1 - self.beta) * both[:b] + self.beta * both[b:]
        del xs, ys
        return out / len(self.deltas)


def smoothed_term(term, beta, deltas):
    return rx.DiffusionTerm(
        SmoothedModel(term.model, term.schedule, beta, deltas), term.schedule, "noise"
    )


class Variant(NamedTuple):
    name: str
    method: ds.Method
    adaptive: bool = False
    smoothing: tuple | None = None  # (beta, deltas) for ours


def variants(names):
    table = ds.all_methods()
    rex_dopri5 = ds.Method("Rex Dopri5 adaptive", rx.Rex(diffrax.Dopri5(), "data", ds.COUPLING), 12)
    vs = [
        Variant("DDIM", table["DDIM"]),
        Variant("EDICT", table["EDICT"]),
        Variant("BDIA", table["BDIA"]),
        Variant("O-BELM", table["O-BELM"]),
        Variant("Rex Euler", table["Rex Euler"]),
        Variant("Rex EES27", table["Rex EES27"]),
        Variant("Rex Dopri5 adaptive", rex_dopri5, adaptive=True),
        Variant("NearRev EES27", table["NearRev EES27"]),
        Variant("NearRev EES27 + ours(b=0.5)", table["NearRev EES27"], smoothing=(0.5, (0.0,))),
        Variant(
            "NearRev EES27 + ours(b=0.5 t)",
            table["NearRev EES27"],
            smoothing=(0.5, (-0.25, 0.25)),
        ),
        Variant("Rex EES27 + ours(b=0.5)", table["Rex EES27"], smoothing=(0.5, (0.0,))),
        Variant("Rex Euler + ours(b=0.5)", table["Rex Euler"], smoothing=(0.5, (0.0,))),
    ]
    by_name = {v.name: v for v in vs}
    names = names.split(",")
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(by_name)}")
    return [by_name[n] for n in names]


DEFAULT = (
    "DDIM,EDICT,BDIA,O-BELM,Rex Euler,Rex EES27,Rex Dopri5 adaptive,NearRev EES27,"
    "NearRev EES27 + ours(b=0.5),NearRev EES27 + ours(b=0.5 t),Rex EES27 + ours(b=0.5),"
    "Rex Euler + ours(b=0.5)"
)


def adaptive_grid(term, x, labels, t_edit, rtol):
    """Princeps(Dopri5) from the data up to `t_edit` with a PID controller; the accepted times,
    reversed into a sampling grid (t decreasing)."""
    solver = rx.Princeps(diffrax.Dopri5(), "data")
    ctrl = diffrax.PIDController(rtol=rtol, atol=rtol)
    grid = rx.adaptive_grid(term, solver, x, ds.T_END, t_edit, ctrl, labels, dt0=1e-3)
    return grid[::-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=DEFAULT)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--depths", default="0.3,0.5,0.7,1.0")
    parser.add_argument("--guidance", default="1,2,4")
    parser.add_argument("--base-depth", type=float, default=0.5, help="depth of the w sweep")
    parser.add_argument("--base-guidance", type=float, default=2.0, help="w of the depth sweep")
    parser.add_argument("--rtol", type=float, default=1e-3, help="adaptive grid tolerance")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--report", action="store_true", help="only rewrite the table and plot from the CSV"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    opts = parser.parse_args()
    opts.resume |= opts.report
    if opts.quick:
        opts.images, opts.steps, opts.depths, opts.guidance = 6, 3, "0.5", "1,2"
        opts.methods = "DDIM,Rex Euler,NearRev EES27 + ours(b=0.5)"
    depths = [float(d) for d in opts.depths.split(",")]
    ws = [float(w) for w in opts.guidance.split(",")]
    settings = [(opts.base_depth, w) for w in ws]
    settings += [(d, opts.base_guidance) for d in depths if (d, opts.base_guidance) not in settings]
    out = out_dir(opts.out)
    stem = out / "digits_editing"
    log = Log()
    log(header("digits editing"))
    images, labels = pretrained.digits_test_split()
    x0, c0 = np.asarray(images[: opts.images]), np.asarray(labels[: opts.images])
    target = (c0 + 1 + np.arange(len(c0)) % 9) % 10
    classifier = pretrained.digits_classifier()
    ev = de.Evaluator(classifier, images)
    inv_term = ds.load_term(None)
    terms = {w: (inv_term if w == 1 else ds.load_term(w)) for w in ws + [opts.base_guidance]}
    log(
        f"{len(x0)} held-out digits, {opts.steps} log-SNR steps to the edit depth, float32; "
        f"settings (depth, w): {settings}"
    )
    rows = read_csv(f"{stem}.csv") if opts.resume and Path(f"{stem}.csv").exists() else []
    done = {(r["method"], r["depth"], r["guidance"]) for r in rows}
    x, c, tgt = jnp.asarray(x0), jnp.asarray(c0), jnp.asarray(target)
    examples = {}
    cells = [(v, s) for v in variants(opts.methods) for s in settings]
    cells = [(v, s) for v, s in cells if (v.name, s[0], s[1]) not in done and not opts.report]
    for v, (depth, w) in progress(cells, "cells"):
        t1 = time.perf_counter()
        m = v.method
        it = inv_term if v.smoothing is None else smoothed_term(inv_term, *v.smoothing)
        if v.adaptive:
            ts = adaptive_grid(inv_term, x, c, depth, opts.rtol)
            n = len(ts) - 1
            ts = ds.pad(ts)
        else:
            n = opts.steps
            ts = ds.grid(inv_term.schedule, n, t_start=depth)
        ts = jnp.asarray(ts)
        lat, state = ds.invert_loop(m, it, x, ts, n, c)
        recon, _ = ds.sample_loop(m, it, lat, ts, n, c, state=state)
        edit, _ = ds.sample_loop(m, terms[w], lat, ts, n, tgt, state=state)
        edit, recon = np.asarray(edit, np.float64), np.asarray(recon, np.float64)
        finite = np.isfinite(edit).all(axis=(1, 2, 3)) & (np.abs(edit).max(axis=(1, 2, 3)) <= 3)
        safe = np.where(np.isfinite(edit), edit, 0.0)
        pred = np.argmax(ev.logits(safe), -1)
        row = dict(
            method=v.name,
            depth=depth,
            guidance=w,
            steps=n,
            edit_success=float(np.mean((pred == target) & finite)),
            mse=float(np.mean(de.mse(safe, x0))),
            ssim=float(np.mean(de.ssim(safe, x0))),
            roundtrip_mse=float(np.mean(de.mse(np.nan_to_num(recon, nan=1e3), x0))),
            unstable=float(1 - finite.mean()),
            wall_s=time.perf_counter() - t1,
        )
        rows.append(row)
        log(
            f"{v.name:>30s} depth {depth:.2f} w {w:g} ({n} steps): success "
            f"{row['edit_success']:.2f} MSE {row['mse']:.3f} SSIM {row['ssim']:.3f} RT "
            f"{row['roundtrip_mse']:.1e} unstable {row['unstable']:.2f}"
        )
        write_csv(rows, f"{stem}.csv")
        if (depth, w) == (opts.base_depth, opts.base_guidance):
            examples[v.name] = edit[:8, 0]
            write_examples(f"{stem}_examples.png", x0, examples)
    if examples:
        log(f"examples grid: rows digits, columns source then {list(examples)}")
    report(rows, stem, log, opts)
    log.save(f"{stem}_log.txt", append=opts.resume and not opts.report)


def write_examples(path, x0, examples):
    """Rows: the first 8 digits; columns: the source, then each method's edit."""
    cols = [x0[:8, 0]] + list(examples.values())
    write_png(path, image_grid(np.stack(cols, axis=1), scale=3))


def report(rows, stem, log, opts):
    names = list(dict.fromkeys(r["method"] for r in rows))
    head = ["method", "depth", "w", "edit success", "MSE to source", "SSIM", "RT MSE", "unstable"]
    table = [
        [
            r["method"],
            r["depth"],
            r["guidance"],
            r["edit_success"],
            r["mse"],
            r["ssim"],
            r["roundtrip_mse"],
            r["unstable"],
        ]
        for r in rows
    ]
    body = markdown_table(table, head, ".3g")
    write_markdown(
        f"{stem}.md",
        "Digits editing",
        [("Run", log.lines[0] + "\n\n" + log.lines[1]), ("Results", body)],
    )
    log(body)
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in names:
        style = "-" if "ours" in name else "--"
        for ax, key_ in zip(axes, ("depth", "guidance"), strict=True):
            other = "guidance" if key_ == "depth" else "depth"
            fixed = opts.base_guidance if key_ == "depth" else opts.base_depth
            sel = sorted(
                (r for r in rows if r["method"] == name and r[other] == fixed),
                key=lambda r: r[key_],
            )
            ax.plot(
                [r["edit_success"] for r in sel],
                [r["ssim"] for r in sel],
                style,
                marker="o",
                label=name,
            )
    axes[0].set(
        xlabel="edit success",
        ylabel="SSIM to source",
        title=f"depth sweep (w={opts.base_guidance:g})",
    )
    axes[1].set(
        xlabel="edit success",
        ylabel="SSIM to source",
        title=f"guidance sweep (depth {opts.base_depth:g})",
    )
    axes[0].legend(fontsize=6)
    fig.suptitle("Digits editing: faithfulness vs edit success (up-right is better)")
    fig.tight_layout()
    fig.savefig(f"{stem}.png", dpi=120)


if __name__ == "__main__":
    main()
