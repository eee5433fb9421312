r"""Ablation of Rex on the built-in digits model (the Rex paper's appendix analogue).

Rex = an exponential (Lawson) integrator, stepped in the reparameterised time, inside the
McCallum–Foster coupling. Each ablation removes one ingredient, same base tableau (Midpoint,
second order, so that the variants differ) and same coupling (0.999):

- **Rex** (full): `rexjax.Rex(Midpoint(), "data")`: $Y = x/\sigma$ stepped in
  $\varsigma = \alpha/\sigma$.
- **no coupling** (Princeps): `rexjax.Princeps(Midpoint(), "data")`; it has no exact inverse,
  so it is inverted by stepping the scheme backwards (`rexjax.NearReversible(Midpoint())`).
- **no exponential**: the McCallum–Foster coupling of plain Midpoint on $x$ with the
  probability-flow drift `term.vf` in the diffusion time $t$ (rexjax has no such solver: the
  `CoupledRK` below, `exponential=False`).
- **no reparameterisation**: the integrating factor is kept ($Y = x/\sigma$) but the
  Runge–Kutta scheme steps in $t$: $\mathrm dY/\mathrm dt = \dot\varsigma(t)\,\hat x_0(t, \sigma
  Y)$ with $\dot\varsigma = \dot\lambda e^{\lambda}$, coupled the same way (`CoupledRK`,
  `exponential=True`; not expressible with rexjax's solvers, which always step in
  $\varsigma$).

All on the same log-SNR grids (10, 20, 50 steps, t=1 -> 1e-3), float32. Measured: the round-trip
MSE of held-out digits (conditional model, no guidance) and FD-digits / class accuracy of
class-conditional samples with CFG (`--guidance`, default 2) from shared noise.

Run: `python experiments/digits_ablation.py [--samples 1000] [--images 100]`. Writes
`results/digits_ablation.{csv,md,png}` and a log.
"""

import argparse
import os
import sys
import time
from pathlib import Path
from typing import ClassVar


os.environ.setdefault("EQX_ON_ERROR", "nan")

import jax  # noqa: E402


jax.config.update("jax_enable_x64", True)
import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


sys.path.insert(0, str(Path(__file__).parent))
import digits_eval as de  # noqa: E402
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
from rexjax._reversible import base_tableau  # noqa: E402
from rexjax.models import pretrained  # noqa: E402


class CoupledRK(rx.AbstractReversibleSolver):
    r"""The McCallum–Foster reversible coupling of an explicit RK scheme stepping in the
    diffusion time $t$, on $x$ itself (`exponential=False`, $\mathrm dx/\mathrm dt$ = the
    probability-flow drift) or on $Y = x/\sigma$ (`exponential=True`, $\mathrm dY/\mathrm dt
    = \dot\varsigma\,\hat x_0(t, \sigma Y)$, $\varsigma = e^\lambda$). With $\Phi$ the RK
    increment of $Y$ over a step,
    $Y_{n+1} = \zeta Y_n + (1-\zeta)\hat Y_n + \Phi(t_n \to t_{n+1}, \hat Y_n)$,
    $\hat Y_{n+1} = \hat Y_n - \Phi(t_{n+1} \to t_n, Y_{n+1})$, inverted in closed form."""

    base: diffrax.AbstractSolver
    exponential: bool
    coupling: float = ds.COUPLING

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return self.base.order(terms)

    def init(self, terms, t0, t1, y0, args):
        return y0

    def _kappa(self, term, t, dtype):
        kappa = term.schedule.sigma(t) if self.exponential else jnp.ones_like(t)
        return kappa.astype(dtype)  # the schedule may compute in float64

    def _g(self, term, t, y, args):
        if not self.exponential:
            return term.vf(t, y, args)
        s = term.schedule
        dalpha, dsigma = s.derivatives(t)
        dlam = dalpha / s.alpha(t) - dsigma / s.sigma(t)
        x = s.sigma(t).astype(y.dtype) * y  # the schedule may compute in float64
        return ((dlam * jnp.exp(s.log_snr(t))) * term.data(t, x, args)).astype(y.dtype)

    def _phi(self, term, ta, tb, y, args):
        tab = base_tableau(self.base)
        h = (tb - ta).astype(y.dtype)
        ks = [self._g(term, ta, y, args)]
        for c_i, a_i in zip(tab.c, tab.a_lower, strict=True):
            z = y + h * sum(float(a) * k for a, k in zip(a_i, ks, strict=False) if a != 0)
            ks.append(self._g(term, ta + c_i * (tb - ta), z, args))
        return h * sum(float(b) * k for b, k in zip(tab.b_sol, ks, strict=True) if b != 0)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        term = terms
        k0, k1 = self._kappa(term, t0, y0.dtype), self._kappa(term, t1, y0.dtype)
        y, yh = y0 / k0, solver_state / k0
        z = self.coupling
        y1 = z * y + (1 - z) * yh + self._phi(term, t0, t1, yh, args)
        yh1 = yh - self._phi(term, t1, t0, y1, args)
        return k1 * y1, None, dict(y0=y0, y1=k1 * y1), k1 * yh1, diffrax.RESULTS.successful

    def backward_step(self, terms, t0, t1, y1, args, ts_state, solver_state, made_jump):
        term = terms
        k0, k1 = self._kappa(term, t0, y1.dtype), self._kappa(term, t1, y1.dtype)
        y, yh = y1 / k1, solver_state / k1
        z = self.coupling
        yh0 = yh + self._phi(term, t1, t0, y, args)
        y0 = (y - (1 - z) * yh0 - self._phi(term, t0, t1, yh0, args)) / z
        return k0 * y0, dict(y0=k0 * y0, y1=y1), k0 * yh0, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


def variants():
    mid = diffrax.Midpoint()
    return [
        ds.Method("Rex Midpoint (full)", rx.Rex(mid, "data", ds.COUPLING), 4),
        ds.Method("no coupling (Princeps)", rx.NearReversible(mid, "data"), 2),
        ds.Method("no exponential (coupled RK on x, in t)", CoupledRK(mid, False), 4),
        ds.Method("no reparameterisation (Lawson, RK in t)", CoupledRK(mid, True), 4),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="10,20,50")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--resume", action="store_true", help="keep the cells in the CSV")
    parser.add_argument(
        "--report", action="store_true", help="only rewrite the table and plot from the CSV"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    opts = parser.parse_args()
    opts.resume |= opts.report
    if opts.quick:
        opts.steps, opts.samples, opts.images, opts.batch = "2,3", 20, 4, 20
    steps = [int(s) for s in opts.steps.split(",")]
    out = out_dir(opts.out)
    stem = out / "digits_ablation"
    log = Log()
    log(header("digits ablation"))
    images, labels = pretrained.digits_test_split()
    ev = de.Evaluator(pretrained.digits_classifier(), images)
    term_c, term_g = ds.load_term(None), ds.load_term(opts.guidance)
    x0 = jnp.asarray(images[: opts.images])
    c0 = jnp.asarray(labels[: opts.images])
    gen_labels = np.arange(opts.samples, dtype=np.int32) % 10
    noise = np.asarray(
        jax.random.normal(key(0), (opts.samples, *pretrained.IMAGE_SHAPE), jnp.float32)
    )
    log(
        f"round trip: {len(x0)} held-out digits (conditional model); FD: {opts.samples} "
        f"samples, CFG {opts.guidance}; float32; log-SNR grids t=1 -> 1e-3"
    )
    rows = read_csv(f"{stem}.csv") if opts.resume and Path(f"{stem}.csv").exists() else []
    done = {(r["variant"], r["steps"]) for r in rows}
    for m in progress(variants(), "variants"):
        for n in steps:
            if (m.name, n) in done or opts.report:
                continue
            t0 = time.perf_counter()
            ts = jnp.asarray(ds.grid(term_c.schedule, n))
            lat, st = ds.invert_loop(m, term_c, x0, ts, n, c0)
            xr, _ = ds.sample_loop(m, term_c, lat, ts, n, c0, state=st)
            err = np.asarray(xr, np.float64) - np.asarray(x0, np.float64)
            rt = float(np.mean(err**2)) if np.all(np.isfinite(err)) else float("inf")
            latent_rms = float(np.sqrt(np.mean(np.asarray(lat, np.float64) ** 2)))

            def gen(z, y, m=m, ts=ts, n=n):
                return ds.sample_loop(m, term_g, jnp.asarray(z), ts, n, jnp.asarray(y))[0]

            x = ds.in_batches(gen, noise, gen_labels, batch=opts.batch)
            g = ev.generation(x, gen_labels)
            rows.append(
                dict(
                    variant=m.name,
                    steps=n,
                    nfe=m.nfe * n,
                    rt_mse=rt,
                    latent_rms=latent_rms,
                    fd=g["fd"],
                    accuracy=g["accuracy"],
                    frac_nonfinite=g["frac_nonfinite"],
                    wall_s=time.perf_counter() - t0,
                )
            )
            log(
                f"{m.name:>42s} {n:3d} steps: RT MSE {rt:.2e} latent RMS {latent_rms:.3g} "
                f"FD {g['fd']:.3f} acc {g['accuracy']:.3f} non-finite {g['frac_nonfinite']:.2f}"
            )
            write_csv(rows, f"{stem}.csv")
    head = (
        ["variant"]
        + [f"RT MSE@{n}" for n in steps]
        + [f"latent RMS@{n}" for n in steps]
        + [f"FD@{n}" for n in steps]
    )
    cell = {(r["variant"], r["steps"]): r for r in rows}
    names = list(dict.fromkeys(r["variant"] for r in rows))
    table = [
        [v] + [cell[v, n][k] for k in ("rt_mse", "latent_rms", "fd") for n in steps] for v in names
    ]
    body = markdown_table(table, head, ".3g")
    write_markdown(
        f"{stem}.md",
        "Digits ablation",
        [("Run", log.lines[0] + "\n\n" + log.lines[1]), ("Results", body)],
    )
    log(body)
    plt = pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for v in names:
            xs = [n for n in steps if (v, n) in cell]
            axes[0].plot(xs, [cell[v, n]["rt_mse"] for n in xs], marker="o", label=v)
            axes[1].plot(xs, [cell[v, n]["fd"] for n in xs], marker="o")
        axes[0].set(xscale="log", yscale="log", xlabel="steps", ylabel="round-trip MSE (float32)")
        axes[1].set(xscale="log", yscale="log", xlabel="steps", ylabel="FD-digits")
        for ax in axes:
            ax.set_xticks(steps, [str(n) for n in steps])
            ax.minorticks_off()
        axes[0].legend(fontsize=7)
        fig.suptitle("Rex ablation on the digits model (Midpoint base)")
        fig.tight_layout()
        fig.savefig(f"{stem}.png", dpi=120)
    log.save(f"{stem}_log.txt", append=opts.resume and not opts.report)


if __name__ == "__main__":
    main()
