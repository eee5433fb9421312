"""Coarse-step accuracy: is Rex as accurate as its own Princeps base at 10-100 steps?

For each model, floating-point type, base tableau (Euler, Midpoint, Heun, RK4, Tsit5, Dopri5,
EES25, EES27 and the fourth-order composition EES27x5), prediction (data, noise) and number of
steps N (10, 15, 25, 50, 100) on a log-SNR grid (t = 1 -> 1e-3):

- Princeps(base) and Rex(base, coupling) for coupling in {1, 0.999, 0.99, 0.9} sample from the
  same noise; error = relative RMS ||x - x_ref|| / ||x_ref|| against a float64 reference
  (mixture: adaptive Dopri8, rtol = atol = 1e-12; networks: Princeps(Tsit5, noise) on 1000
  log-SNR steps);
- for Rex also the coupling gap ||x - xh|| / ||x|| at the end of sampling (the separation of
  the coupled pair, `rexjax.sample(..., full_state=True)`), and the round trip
  sample -> invert -> sample, max |x' - x| / max |x| (as `python -m rexjax solvers`);
- the ratio error(Rex) / error(Princeps) on the same grid, and a verdict per configuration:
  "safe" when the ratio is <= 1.5 at every N and (mixture) the round trip is at the
  floating-point floor (float64 <= 1e-12, float32 <= 1e-5).

Plus sample error against NFE (float64, mixture) of Princeps and Rex against DDIM, EDICT,
BDIA, O-BELM, DPM-Solver++(2M) and NearReversible(EES27).

Models: `gmm`, the analytic Gaussian mixture `rexjax.GaussianMixture.default` (16-d, 256
samples); `ddpm`, the random-weight Flax `UNet2DModel` of `reconstruction.py` (3x32x32);
`digits`, the trained digits model `rexjax.models.pretrained.digits_term` when it exists.

The loops are `reconstruction.py`'s (`solver.step` / `backward_step` in a `lax.while_loop`
over a padded grid), checked at start-up against `rexjax.sample` / `rexjax.invert`; the
coupling is an array leaf and N a traced integer, so each (solver kind, dtype) compiles once.

Run: `python experiments/coarse_steps.py [--models gmm,ddpm,digits] [--quick] [--out DIR]`;
`--report` only rebuilds the markdown and plots from the CSVs in the results folder. Writes
`results/coarse_steps_<model>.csv`, `results/coarse_steps_nfe.csv`, `results/coarse_steps*.png`
and `results/coarse_steps.md`.
"""

import argparse
import os
import sys
import time
from pathlib import Path


os.environ.setdefault("EQX_ON_ERROR", "nan")  # a diverging configuration is recorded, not raised

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


jax.config.update("jax_enable_x64", True)

import rexjax as rx  # noqa: E402


sys.path.insert(0, str(Path(__file__).parent))
from reconstruction import backward, baseline_methods, forward, make_unet_model  # noqa: E402

from common import (  # noqa: E402
    Log,
    header,
    markdown_table,
    out_dir,
    progress,
    pyplot,
    read_csv,
    write_csv,
)


T_START, T_END = 1.0, 1e-3
STEPS = (10, 15, 25, 50, 100)
NFE_STEPS = (10, 15, 25, 50, 100, 200, 400)
PAD = 400  # every grid is padded to this length: one compilation per solver kind and dtype
COUPLINGS = (1.0, 0.999, 0.99, 0.9, "auto")
REF_STEPS = (300, 600)  # the networks' reference: Princeps(Tsit5) on these log-SNR grids
PREDICTIONS = ("data", "noise")
RATIO_SAFE = 1.5
RT_FLOOR = {"float64": 1e-12, "float32": 1e-5}


def bases():
    return {
        "Euler": diffrax.Euler(),
        "Midpoint": diffrax.Midpoint(),
        "Heun": diffrax.Heun(),
        "RK4": rx.RK4(),
        "Tsit5": diffrax.Tsit5(),
        "Dopri5": diffrax.Dopri5(),
        "EES25": rx.EES25(),
        "EES27": rx.EES27(),
        "EES27x5": rx.EES27x5(),
    }


# ----------------------------------------------------------------------------- models


class Model:
    """A diffusion term, its conditioning, the noise, and the float64 reference samples."""

    def __init__(self, name, samples, log):
        self.name = name
        start = time.time()
        if name == "gmm":
            schedule = rx.VPSchedule.linear()
            gmm = rx.GaussianMixture.default(schedule, prediction="noise")
            self.terms = {dt: gmm.term() for dt in ("float32", "float64")}
            self.args = None
            shape = (samples, gmm.dim)
            self.label = f"analytic Gaussian mixture (6 components, d={gmm.dim}), VP linear"
        elif name == "ddpm":
            self.terms, self.args = {}, None
            for dt in ("float32", "float64"):
                self.terms[dt], _, img, self.label = make_unet_model("ddpm", jnp.dtype(dt))
            shape = (samples, *img)
        elif name == "digits":
            try:
                from rexjax.models import pretrained
            except ImportError as e:
                raise SystemExit(
                    "--models digits needs rexjax.models.pretrained (the trained digits model, "
                    f"branch digits-model): {e}"
                ) from e
            self.terms = {dt: pretrained.digits_term(dtype=jnp.dtype(dt)) for dt in RT_FLOOR}
            self.args = jnp.arange(samples) % 10
            shape = (samples, *pretrained.digits_test_split()[0].shape[1:])
            self.label = "trained digits model (rexjax.models.pretrained), class-conditional"
        else:
            raise SystemExit(f"Unknown model {name!r}: use gmm, ddpm or digits.")
        self.noise = jax.random.normal(jax.random.key(0), shape, jnp.float64)
        self.reference, how = self._reference()
        log(
            f"== {name}: {self.label}; {shape[0]} samples; reference: {how} "
            f"({time.time() - start:.0f} s)"
        )

    @property
    def schedule(self):
        return self.terms["float64"].schedule

    def _reference(self):
        term = self.terms["float64"]
        if name_is_continuous(term):
            sol = diffrax.diffeqsolve(
                term,
                diffrax.Dopri8(),
                t0=T_START,
                t1=T_END,
                dt0=-1e-3,
                y0=self.noise,
                args=self.args,
                stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12),
                max_steps=100_000,
            )
            return sol.ys[-1], f"adaptive Dopri8, rtol 1e-12 ({int(sol.stats['num_steps'])} steps)"
        # Discrete schedules have kinks in t between training steps: an exponential integrator
        # on a fine log-SNR grid instead (its error is estimated against half the steps).
        solver = rx.Princeps(diffrax.Tsit5(), "noise")
        out = [
            rx.sample(
                term,
                solver,
                self.noise,
                rx.log_snr_grid(self.schedule, T_START, T_END, n),
                self.args,
            )
            for n in REF_STEPS
        ]
        est = rel_rms(out[0], out[1])
        return out[1], (
            f"Princeps(Tsit5, noise), {REF_STEPS[1]} log-SNR steps (est. error {est:.1e} "
            f"against {REF_STEPS[0]})"
        )


def name_is_continuous(term):
    return not isinstance(term.schedule, rx.DiscreteVPSchedule)


# ----------------------------------------------------------------------------- measures


def rel_rms(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.all(np.isfinite(a)):
        return float("inf")
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def rel_max(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.all(np.isfinite(a)):
        return float("inf")
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def padded_grid(schedule, n, dtype):
    ts = np.asarray(rx.log_snr_grid(schedule, T_START, T_END, n))
    out = np.full(PAD + 1, T_END)
    out[: n + 1] = ts
    return jnp.asarray(out, dtype)


def evaluations(term, solver, y, args):
    """(model evaluations in `init`, per `step`), counted while tracing one step."""
    calls = [0]

    def counting(t, x, a):
        calls[0] += 1
        return term.model(t, x, a)

    cterm = rx.DiffusionTerm(counting, term.schedule, term.model_type)
    ts = jnp.asarray([T_START, T_END])
    state = jax.eval_shape(lambda: solver.init(cterm, ts[0], ts[1], y, args))
    n_init = calls[0]
    jax.eval_shape(lambda s: solver.step(cterm, ts[0], ts[1], y, args, s, False), state)
    return n_init, calls[0] - n_init


def run_solver(model, solver, n, dtype):
    """Sample with `solver` on the n-step grid: (sample, final solver state)."""
    term, y = model.terms[dtype], model.noise.astype(dtype)
    ts = padded_grid(model.schedule, n, dtype)
    state = solver.init(term, ts[0], ts[n], y, model.args)
    return forward(term, solver, y, state, ts, jnp.asarray(n), model.args)


def round_trip(model, solver, x, n, dtype):
    """sample -> invert -> sample from the sample `x` (solver state from `init`, as
    `rexjax.invert`): max relative error."""
    term = model.terms[dtype]
    ts = padded_grid(model.schedule, n, dtype)
    state = solver.init(term, ts[n], ts[0], x, model.args)
    lat, lat_state = backward(term, solver, x, state, ts, jnp.asarray(n), model.args)
    rec, _ = forward(term, solver, lat, lat_state, ts, jnp.asarray(n), model.args)
    return rel_max(rec, x)


@eqx.filter_jit
def _rex_all_couplings(term, rex, zetas, y, ts, n, args):
    def one(zeta):
        solver = eqx.tree_at(lambda s: s.coupling, rex, zeta)
        x, xh = forward(term, solver, y, y, ts, n, args)  # Rex.init: xh = y
        lat, lat_state = backward(term, solver, x, x, ts, n, args)
        rec, _ = forward(term, solver, lat, lat_state, ts, n, args)
        return x, xh, rec

    return jax.vmap(one)(zetas)


@eqx.filter_jit
def _rex_auto(term, rex, y, ts, n, args):
    solver = eqx.tree_at(lambda s: s.coupling, rex, "auto")
    x, xh = forward(term, solver, y, y, ts, n, args)
    lat, lat_state = backward(term, solver, x, x, ts, n, args)
    rec, _ = forward(term, solver, lat, lat_state, ts, n, args)
    return x, xh, rec


def run_rex(model, rex, couplings, n, dtype):
    """Rex at every coupling (the numbers vmapped: one compilation per base, prediction and
    dtype; "auto", a coupling per step, separately): per coupling (sample, xh at the end, the
    sample after invert -> sample)."""
    term, y = model.terms[dtype], model.noise.astype(dtype)
    ts = padded_grid(model.schedule, n, dtype)
    fixed = [z for z in couplings if z != "auto"]
    outs = {}
    if fixed:
        zetas = jnp.asarray(fixed, dtype)
        stacked = _rex_all_couplings(term, rex, zetas, y, ts, jnp.asarray(n), model.args)
        outs.update({z: tuple(a[i] for a in stacked) for i, z in enumerate(fixed)})
    if "auto" in couplings:
        outs["auto"] = _rex_auto(term, rex, y, ts, jnp.asarray(n), model.args)
    return tuple(jnp.stack([outs[z][k] for z in couplings]) for k in range(3))


def zeta_label(zeta) -> str:
    """A coupling as printed: a number, or "auto"."""
    return zeta if isinstance(zeta, str) else f"{zeta:g}"


def check_against_public_api(model, base, log):
    """The loops equal `rexjax.sample(full_state=True)` to round-off, and their round trip
    that of `rexjax.invert` / `rexjax.sample` (Rex(base, noise) with its per-step coupling and
    damped copy, 10 steps, float64)."""
    term, y = model.terms["float64"], model.noise
    ts = rx.log_snr_grid(model.schedule, T_START, T_END, 10)
    solver = rx.Rex(base, "noise")
    full = rx.sample(term, solver, y, ts, model.args, full_state=True)
    lat = rx.invert(term, solver, full.y, ts, model.args)
    again = rx.sample(term, solver, lat, ts, model.args)
    x, xh, rec = (a[0] for a in run_rex(model, solver, ("auto",), 10, "float64"))
    worst = max(rel_max(x, full.y), rel_max(xh, full.solver_state))
    rt_public, rt_loop = rel_max(again, full.y), rel_max(rec, x)
    log(
        f"start-up check: loops vs rexjax.sample(full_state=True), max rel. difference "
        f"{worst:.1e}; round trip: loops {rt_loop:.1e}, rexjax.invert/sample {rt_public:.1e}"
    )
    if worst > 1e-13 or rt_loop > 10 * rt_public + 1e-14:
        raise RuntimeError("The study's loops disagree with rexjax.sample.")


# ----------------------------------------------------------------------------- sweeps


def sweep(model, dtypes, base_names, couplings, steps, partial=None, predictions=PREDICTIONS):
    """Princeps and Rex rows for every base, prediction, coupling and N (written to `partial`
    after each base, so that a run cut short keeps what is done)."""
    rows = []
    jobs = [(dt, b, p) for dt in dtypes for b in base_names for p in predictions]
    for dtype, bname, pred in progress(jobs, desc=f"{model.name} sweep"):
        base = bases()[bname]
        princeps = rx.Princeps(base, pred)
        per_step = evaluations(model.terms[dtype], princeps, model.noise, model.args)[1]
        ref = {}
        for n in steps:
            x, _ = run_solver(model, princeps, n, dtype)
            ref[n] = rel_rms(x, model.reference)
            rows.append(
                dict(
                    model=model.name,
                    dtype=dtype,
                    base=bname,
                    prediction=pred,
                    method="Princeps",
                    coupling=float("nan"),
                    steps=n,
                    nfe=n * per_step,
                    error=ref[n],
                    ratio=1.0,
                    gap=float("nan"),
                    round_trip=float("nan"),
                )
            )
        rex = rx.Rex(base, pred)
        for n in steps:
            xs, xhs, recs = run_rex(model, rex, couplings, n, dtype)
            for zeta, x, xh, rec in zip(couplings, xs, xhs, recs, strict=True):
                err = rel_rms(x, model.reference)
                rows.append(
                    dict(
                        model=model.name,
                        dtype=dtype,
                        base=bname,
                        prediction=pred,
                        method="Rex",
                        coupling=zeta,
                        steps=n,
                        nfe=2 * n * per_step,
                        error=err,
                        ratio=err / ref[n],
                        gap=rel_rms(xh, x),
                        round_trip=rel_max(rec, x),
                    )
                )
        if partial is not None:
            write_csv(rows, partial)
        jax.clear_caches()  # keeps a long run within the process's memory-map limit
    return rows


def nfe_sweep(model, steps, quick=False):
    """float64 sample error vs NFE of the baselines and NearReversible (Princeps and Rex rows
    come from `sweep`)."""
    rows = []
    methods = [(m.name, m.solver) for m in baseline_methods()]
    methods += [(f"NearRev EES27 {p}", rx.NearReversible(rx.EES27(), p)) for p in PREDICTIONS]
    if quick:
        methods = methods[:1]
    term = model.terms["float64"]
    for name, solver in progress(methods, desc="NFE sweep"):
        n_init, per_step = evaluations(term, solver, model.noise, model.args)
        for n in steps:
            x, _ = run_solver(model, solver, n, "float64")
            rt = round_trip(model, solver, x, n, "float64")
            rows.append(
                dict(
                    model=model.name,
                    method=name,
                    steps=n,
                    nfe=n_init + n * per_step,
                    error=rel_rms(x, model.reference),
                    round_trip=rt,
                )
            )
        jax.clear_caches()
    return rows


# ----------------------------------------------------------------------------- report


def verdict_rows(rows):
    """Per (model, base, prediction, coupling, dtype): max ratio over N, worst round trip,
    largest gap, and the verdict."""
    out = []
    keys = dict.fromkeys(
        (r["model"], r["base"], r["prediction"], r["coupling"], r["dtype"])
        for r in rows
        if r["method"] == "Rex"
    )
    for model, base, pred, zeta, dtype in keys:
        sel = [
            r
            for r in rows
            if r["method"] == "Rex"
            and (r["model"], r["base"], r["prediction"], r["coupling"], r["dtype"])
            == (model, base, pred, zeta, dtype)
        ]
        ratio = max(r["ratio"] for r in sel)
        rt = max(r["round_trip"] for r in sel)
        worst_n = max(sel, key=lambda r: r["ratio"])["steps"]
        ok_ratio, ok_rt = ratio <= RATIO_SAFE, rt <= RT_FLOOR[dtype]
        why = [] if ok_ratio else [f"ratio {ratio:.3g} at N={worst_n}"]
        why += [] if ok_rt else [f"round trip {rt:.1e}"]
        out.append(
            dict(
                model=model,
                base=base,
                prediction=pred,
                coupling=zeta,
                dtype=dtype,
                max_ratio=ratio,
                worst_steps=worst_n,
                round_trip=rt,
                max_gap=max(r["gap"] for r in sel),
                safe=not why,
                why="; ".join(why),
            )
        )
    return out


def readme_table(verdicts, model):
    """Rows per (base, prediction), a cell per coupling: max ratio float64 / float32 and the
    verdict over both dtypes."""
    table = []
    sel = [v for v in verdicts if v["model"] == model]
    for base in dict.fromkeys(v["base"] for v in sel):
        for pred in PREDICTIONS:
            row = [base, pred]
            for zeta in dict.fromkeys(v["coupling"] for v in sel):
                cell = {
                    v["dtype"]: v
                    for v in sel
                    if (v["base"], v["prediction"], v["coupling"]) == (base, pred, zeta)
                }
                if not cell:
                    row.append("-")
                    continue
                ratios = "/".join(f"{cell[d]['max_ratio']:.3g}" for d in RT_FLOOR if d in cell)
                safe = len(cell) == len(RT_FLOOR) and all(c["safe"] for c in cell.values())
                rt_bad = any(c["round_trip"] > RT_FLOOR[c["dtype"]] for c in cell.values())
                verdict = (
                    "**safe**"
                    if safe
                    else (
                        "no (round trip)"
                        if rt_bad and all(c["max_ratio"] <= RATIO_SAFE for c in cell.values())
                        else "no"
                    )
                )
                if len(cell) < len(RT_FLOOR) and all(c["safe"] for c in cell.values()):
                    verdict = f"safe in {next(iter(cell))} (other dtype not run)"
                row.append(f"{ratios} {verdict}")
            table.append(row)
    zetas = dict.fromkeys(v["coupling"] for v in sel)
    return markdown_table(table, ["base", "prediction", *[f"ζ={zeta_label(z)}" for z in zetas]])


def reading(verdicts, model):
    """The verdicts in words: the safe configurations and the range of round trips per
    prediction and dtype."""
    sel = [v for v in verdicts if v["model"] == model]
    both = {}
    for v in sel:
        both.setdefault((v["base"], v["prediction"], v["coupling"]), []).append(v)
    safe = [k for k, vs in both.items() if len(vs) == len(RT_FLOOR) and all(v["safe"] for v in vs)]
    lines = [
        "Safe (both dtypes): "
        + (", ".join(f"{b} {p} ζ={zeta_label(z)}" for b, p, z in safe) if safe else "none")
        + "."
    ]
    for pred in PREDICTIONS:
        for dtype in RT_FLOOR:
            rts = [v["round_trip"] for v in sel if (v["prediction"], v["dtype"]) == (pred, dtype)]
            if rts:
                lines.append(
                    f"Worst round trip per configuration, {pred} prediction, {dtype}: "
                    f"{min(rts):.1e} to {max(rts):.1e}."
                )
    return "\n".join(f"- {line}" for line in lines) + "\n"


def report(out, log, title_line):
    rows = []
    for path in sorted(out.glob("coarse_steps_*.csv")):
        if path.name != "coarse_steps_nfe.csv" and not path.name.startswith("coarse_steps_verd"):
            rows += read_csv(path)
    if not rows:
        raise SystemExit(f"no coarse_steps_<model>.csv in {out}")
    verdicts = verdict_rows(rows)
    write_csv(verdicts, out / "coarse_steps_verdicts.csv")
    nfe_path = out / "coarse_steps_nfe.csv"
    nfe_rows = read_csv(nfe_path) if nfe_path.exists() else []
    models = list(dict.fromkeys(r["model"] for r in rows))
    sections = []
    if "gmm" in models:
        sections.append(
            (
                "Which bases and couplings are safe (README table)",
                "Gaussian mixture (16-d, 256 samples), log-SNR grids of 10, 15, 25, 50 and 100 "
                "steps from t = 1 to 1e-3. Each cell: the largest ratio error(Rex) / "
                "error(Princeps on the same grid) over those step counts, float64 / float32; "
                "**safe** when it is <= 1.5 "
                "at every step count in both dtypes and the round trip sample -> invert -> sample "
                "is at the floor (float64 <= 1e-12, float32 <= 1e-5 max relative).\n\n"
                + readme_table(verdicts, "gmm")
                + "\n"
                + reading(verdicts, "gmm"),
            )
        )
    for model in models:
        if model != "gmm":
            sections.append(
                (
                    f"{model}: max ratio over N (float64 / float32; round-trip "
                    "floors are judged on the mixture only)",
                    readme_table(verdicts, model),
                )
            )
    headers = [
        "model",
        "base",
        "prediction",
        "ζ",
        "dtype",
        "max ratio",
        "at N",
        "worst round trip",
        "max gap",
        "safe",
        "why not",
    ]
    sections.append(
        (
            "Verdict per configuration",
            markdown_table(
                [
                    [
                        v["model"],
                        v["base"],
                        v["prediction"],
                        zeta_label(v["coupling"]),
                        v["dtype"],
                        v["max_ratio"],
                        v["worst_steps"],
                        v["round_trip"],
                        v["max_gap"],
                        "yes" if v["safe"] else "no",
                        v["why"],
                    ]
                    for v in verdicts
                ],
                headers,
                ".2e",
            ),
        )
    )
    for model in models:
        for dtype in RT_FLOOR:
            sel = [r for r in rows if r["model"] == model and r["dtype"] == dtype]
            if not sel:
                continue
            steps = sorted({r["steps"] for r in sel})
            table = []
            for r0 in sel:
                if r0["steps"] != steps[0]:
                    continue
                same = [
                    r
                    for r in sel
                    if (r["base"], r["prediction"], r["method"], str(r["coupling"]))
                    == (r0["base"], r0["prediction"], r0["method"], str(r0["coupling"]))
                ]
                by_n = {r["steps"]: r["error"] for r in same}
                zeta = zeta_label(r0["coupling"])
                label = "Princeps" if r0["method"] == "Princeps" else f"Rex ζ={zeta}"
                table.append(
                    [
                        r0["base"],
                        r0["prediction"],
                        label,
                        *[by_n.get(n, float("nan")) for n in steps],
                    ]
                )
            sections.append(
                (
                    f"{model}, {dtype}: sample error (rel. RMS) vs steps",
                    markdown_table(
                        table, ["base", "prediction", "solver", *[f"N={n}" for n in steps]], ".1e"
                    ),
                )
            )
    if nfe_rows:
        table = [[r["method"], r["steps"], r["nfe"], r["error"], r["round_trip"]] for r in nfe_rows]
        sections.append(
            (
                "Mixture, float64: baselines and NearReversible (error vs NFE; Rex "
                "and Princeps rows: NFE column of the CSV)",
                markdown_table(table, ["method", "steps", "NFE", "error", "round trip"], ".1e"),
            )
        )
    text = [f"# Coarse-step accuracy of Rex against its Princeps base\n\n{title_line}\n"]
    text += [f"## {h}\n\n{b}\n" for h, b in sections]
    (out / "coarse_steps.md").write_text("\n".join(text))
    plot(rows, nfe_rows, out, log)


def plot(rows, nfe_rows, out, log):
    plt = pyplot()
    if plt is None:
        log("matplotlib is not installed: no plots written.")
        return
    colours = {
        "Princeps": "black",
        1.0: "tab:red",
        0.999: "tab:orange",
        0.99: "tab:green",
        0.9: "tab:blue",
    }
    for model in dict.fromkeys(r["model"] for r in rows):
        sel = [r for r in rows if r["model"] == model]
        base_names = list(dict.fromkeys(r["base"] for r in sel))
        cols = [(d, p) for d in RT_FLOOR for p in PREDICTIONS]
        fig, axes = plt.subplots(
            len(base_names),
            4,
            figsize=(16, 2.6 * len(base_names)),
            squeeze=False,
            sharex=True,
            layout="constrained",
        )
        for i, base in enumerate(base_names):
            for j, (dtype, pred) in enumerate(cols):
                ax = axes[i, j]
                cur = [
                    r
                    for r in sel
                    if (r["base"], r["dtype"], r["prediction"]) == (base, dtype, pred)
                ]
                for key in dict.fromkeys(
                    "Princeps" if r["method"] == "Princeps" else r["coupling"] for r in cur
                ):
                    pts = sorted(
                        (r["steps"], min(max(r["error"], 1e-17), 1e3))
                        for r in cur
                        if ("Princeps" if r["method"] == "Princeps" else r["coupling"]) == key
                    )
                    label = key if key == "Princeps" else f"Rex ζ={zeta_label(key)}"
                    ax.loglog(
                        *zip(*pts, strict=True),
                        marker="o",
                        ms=3,
                        label=label,
                        color=colours.get(key),
                        lw=2 if key == "Princeps" else 1,
                    )
                ax.set_title(f"{base}, {pred}, {dtype}", fontsize=9)
                ax.grid(True, which="both", alpha=0.3)
                if i == len(base_names) - 1:
                    ax.set_xlabel("steps")
        axes[0, 0].legend(fontsize=7)
        fig.suptitle(f"{model}: sample error (rel. RMS) vs steps, Rex vs its Princeps base")
        fig.savefig(out / f"coarse_steps_{model}.png", dpi=80)
        plt.close(fig)
    gmm64 = [r for r in rows if r["model"] == "gmm" and r["dtype"] == "float64"]
    if not gmm64 or not nfe_rows:
        return
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5), layout="constrained", sharey=True)
    picks = [
        ("RK4", "Princeps", None),
        ("Tsit5", "Princeps", None),
        ("EES27", "Princeps", None),
        ("EES27x5", "Princeps", None),
        ("EES27", "Rex", 0.999),
        ("EES27", "Rex", 0.99),
        ("EES27", "Rex", 0.9),
        ("EES27x5", "Rex", 0.999),
        ("EES27x5", "Rex", 0.9),
        ("RK4", "Rex", 0.999),
        ("Tsit5", "Rex", 0.999),
        ("Euler", "Rex", 0.999),
    ]
    for ax, pred in zip(axes, PREDICTIONS, strict=True):
        for base, method, zeta in picks:
            pts = sorted(
                (r["nfe"], min(max(r["error"], 1e-17), 1e1))
                for r in gmm64
                if (r["base"], r["method"], r["prediction"]) == (base, method, pred)
                and (zeta is None or r["coupling"] == zeta)
            )
            if pts:
                label = f"{method} {base}" + ("" if zeta is None else f" ζ={zeta_label(zeta)}")
                ax.loglog(
                    *zip(*pts, strict=True),
                    marker="o",
                    ms=3,
                    label=label,
                    ls="-" if method == "Rex" else ":",
                )
        for name in dict.fromkeys(r["method"] for r in nfe_rows):
            if "NearRev" in name and not name.endswith(pred):
                continue
            pts = sorted(
                (r["nfe"], min(max(r["error"], 1e-17), 1e1))
                for r in nfe_rows
                if r["method"] == name
            )
            ax.loglog(*zip(*pts, strict=True), marker="s", ms=3, ls="--", label=name)
        ax.set_title(f"mixture, float64: sample error vs NFE (Rex/Princeps {pred} prediction)")
        ax.set_xlabel("model evaluations (NFE)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(out / "coarse_steps_nfe.png", dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gmm", help="comma-separated: gmm, ddpm, digits")
    parser.add_argument("--bases", default=",".join(bases()))
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--couplings", default=",".join(map(str, COUPLINGS)))
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--predictions", default="data,noise")
    parser.add_argument("--samples", type=int, default=256, help="mixture samples")
    parser.add_argument("--images", type=int, default=4, help="network samples")
    parser.add_argument("--no-nfe", action="store_true", help="skip the baselines vs NFE")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--report", action="store_true", help="only rebuild md and plots")
    parser.add_argument("--out", default=None)
    opts = parser.parse_args(argv)
    out = out_dir(opts.out)
    log = Log()
    title = header("rexjax coarse-step study")
    log(title)
    if opts.report:
        report(out, log, title)
        return 0
    base_names = opts.bases.split(",")
    steps = tuple(int(n) for n in opts.steps.split(","))
    couplings = tuple(z if z == "auto" else float(z) for z in opts.couplings.split(","))
    dtypes = opts.dtypes.split(",")
    nfe_steps = NFE_STEPS
    if opts.quick:
        base_names, steps, couplings, nfe_steps = ["EES25"], (10, 15), (1.0, 0.9), (10,)
        opts.samples, opts.images = 32, 1
    unknown = set(base_names) - set(bases())
    if unknown:
        raise SystemExit(f"unknown bases {sorted(unknown)}; choose from {list(bases())}")
    for name in opts.models.split(","):
        model = Model(name, opts.samples if name == "gmm" else opts.images, log)
        if name == "gmm":
            check_against_public_api(model, bases()[base_names[0]], log)
        start = time.time()
        partial = out / f"partial_coarse_steps_{name}.csv"
        rows = sweep(
            model, dtypes, base_names, couplings, steps, partial, opts.predictions.split(",")
        )
        write_csv(rows, out / f"coarse_steps_{name}.csv")
        partial.unlink()
        log(f"{name}: {len(rows)} rows in {time.time() - start:.0f} s")
        if name == "gmm" and not opts.no_nfe:
            start = time.time()
            write_csv(nfe_sweep(model, nfe_steps, opts.quick), out / "coarse_steps_nfe.csv")
            log(f"NFE sweep in {time.time() - start:.0f} s")
    report(out, log, title)
    log.save(out / "coarse_steps_log.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
