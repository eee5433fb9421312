"""Reconstruction study: Rex against the established inversion methods (Rex paper protocol).

For each model, floating-point type, method and number of steps N (10, 20, 50, 100, 200) on a
log-SNR grid from t=1 to t=1e-3:

- round trip: data x0 -> `invert` -> latent -> `sample` -> x0'; MSE and max relative error
  max|x0' - x0| / max|x0|;
- latent accuracy: the encoded latent against the true probability-flow latent of x0 (see
  `pf_reference`), relative RMS ||lat - ref|| / ||ref||;
- sample accuracy at equal NFE (float64): noise -> `sample` against the PF-ODE reference, with
  as many steps as the NFE budget allows, relative RMS. (RMS rather than max: on the mixture a
  single sample near a decision boundary that lands in another mode dominates the max.)

Methods: the baselines (`rexjax.baselines`), Rex with Euler, Midpoint, RK4 and Tsit5 bases
and data or noise prediction on the PF-ODE (coupling 0.999), Rex with the effectively
symmetric EES25 and EES27 bases and NearReversible(EES27) (set `ees`), and Rex on the reverse SDE
(Euler–Maruyama and ShARK; one Brownian path replayed from a key for both directions).

Models: (a) the analytic Gaussian mixture `rexjax.GaussianMixture.default` (16-d, exact
denoiser); (b) `ddpm`: a random-weight diffusers `UNet2DModel` (the Flax port, 3x32x32, DDPM
linear schedule); (c) `sd`: a random-weight UNet2DConditionModel with SD 1.5's architecture at
a tenth of its width (4x32x32 latents, random 77x768 text context, SD's schedule) and `sd-full`,
the full-size SD 1.5 UNet (about 10 s a call on 2 CPU cores); `sd-64` and `sd-full-64` are the
same on SD's native 4x64x64 latents (for a GPU).

Run: `python experiments/reconstruction.py [--models gmm,ddpm,sd] [--methods baselines,rex,ees,sde]
[--steps ...] [--dtypes ...] [--out DIR]`. Writes `results/reconstruction_{roundtrip,nfe}_*.csv`,
`results/reconstruction_*.png` and the printed tables `results/reconstruction_log_*.txt`.

The loops below call each solver's `step` / `backward_step` exactly as `rexjax.sample`
(`diffeqsolve` + `StepTo`) and `rexjax.invert` do, inside one `lax.while_loop` over a padded
grid so that each (method, dtype, model) compiles once for all N; the script checks at start-up
that they agree with `rexjax.sample` / `rexjax.invert` (with the same key for the SDE) to
round-off.
"""

import argparse
import csv
import datetime
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple


# A diverging method (e.g. BDIA with gamma < 1 inverted over many steps) must not abort the
# study: rexjax's finiteness checks return NaN instead of raising, recorded as inf below.
os.environ.setdefault("EQX_ON_ERROR", "nan")

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jaxtyping import Array  # noqa: E402


jax.config.update("jax_enable_x64", True)

import rexjax as rx  # noqa: E402
import rexjax.models as rm  # noqa: E402
from common import Log, write_csv  # noqa: E402
from rexjax.baselines import BDIA, BELM, DDIM, EDICT, DPMSolverPP  # noqa: E402


STEPS = (10, 20, 50, 100, 200)
NFE_BUDGETS = (24, 48, 96, 192)
T_START, T_END = 1.0, 1e-3
DTYPES = (jnp.float32, jnp.float64)
BATCH = 2  # images per batch for the U-Net models
MAX_STEPS = 200  # grids are padded to this length: one compilation per method for all N


# ----------------------------------------------------------------------------- methods


class Method(NamedTuple):
    name: str
    solver: diffrax.AbstractSolver
    sde: bool = False  # the reverse SDE, its Brownian path replayed from a key


def baseline_methods():
    return [
        Method("DDIM (naive inv.)", DDIM()),
        Method("DPM-Solver++(2M) (naive inv.)", DPMSolverPP()),
        Method("EDICT p=0.93", EDICT(0.93)),
        Method("BDIA g=1", BDIA(1.0)),
        Method("BDIA g=0.5", BDIA(0.5)),
        Method("O-BELM", BELM()),
    ]


def rex_methods():
    bases = [
        ("Euler", diffrax.Euler()),
        ("Midpoint", diffrax.Midpoint()),
        ("RK4", rx.RK4()),
        ("Tsit5", diffrax.Tsit5()),
    ]
    # Cheapest first, so that a run cut short still covers every base at low order.
    return [
        Method(f"Rex {name} {pred}", rx.Rex(base, pred, 0.999))
        for name, base in bases
        for pred in ("data", "noise")
    ]


def ees_methods():
    """Effectively symmetric bases (issue 11): Rex with EES(2,5) and EES(2,7) (coupling 0.999),
    and NearReversible(EES27): Princeps inverted by stepping backwards, approximate (its round
    trip is O(h^7), not round-off)."""
    rex = [
        Method(f"Rex {name} {pred}", rx.Rex(base, pred, 0.999))
        for name, base in (("EES25", rx.EES25()), ("EES27", rx.EES27()))
        for pred in ("data", "noise")
    ]
    near = [
        Method(f"NearRev EES27 {p}", rx.NearReversible(rx.EES27(), p)) for p in ("data", "noise")
    ]
    return rex + near


def sde_methods():
    """Rex on the reverse SDE. Noise prediction is stable there only for coupling
    <= exp(-2 dlambda) (see `rexjax.reverse_sde`), so its coupling is set per grid
    (`grid_solver`); data prediction keeps 0.999."""
    bases = [("EM", diffrax.Euler()), ("ShARK", diffrax.ShARK())]
    return [
        Method(f"Rex {name} {pred} SDE", rx.Rex(base, pred, 0.999), sde=True)
        for name, base in bases
        for pred in ("data", "noise")
    ]


METHOD_SETS = {
    "baselines": baseline_methods,
    "rex": rex_methods,
    "ees": ees_methods,
    "sde": sde_methods,
}


def grid_solver(method, schedule, n, dtype):
    """The solver for an `n`-step grid: for Rex on the noise-prediction SDE, the largest
    stable coupling (two decimals, at most 0.999), as an array so that one compilation
    serves every grid."""
    solver = method.solver
    if not (method.sde and solver.prediction == "noise"):
        return solver
    dlam = abs(float(schedule.log_snr(T_END) - schedule.log_snr(T_START))) / n
    coupling = min(0.999, np.floor(100 * np.exp(-2 * dlam)) / 100)
    return eqx.tree_at(lambda s: s.coupling, solver, jnp.asarray(coupling, dtype))


# ----------------------------------------------------------------------------- models


# google/ddpm-cifar10-32's layout (attention at 16x16, no sin/cos flip, shift 1) at reduced
# width (32/64/64 channels, one ResNet per level: 1.1M parameters) for CPU time; its DDPM
# scheduler.
DDPM_UNET = {
    **rm.DDPM_CIFAR10_UNET_CONFIG,
    "block_out_channels": (32, 64, 64),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "layers_per_block": 1,
    "norm_num_groups": 8,
}
# SD 1.5's architecture (blocks, 8 heads, transformer depth, 77x768 text context) with
# every width / 10 (32/64/128/128 channels, 10.4M parameters), for the full sweep on CPU.
SD_SMALL_UNET = {**rm.SD15_UNET_CONFIG, "block_out_channels": (32, 64, 128, 128)}
UNET_MODELS = {
    "ddpm": (DDPM_UNET, rm.DDPM_SCHEDULER_CONFIG, (3, 32, 32)),
    "sd": (SD_SMALL_UNET, rm.SD15_SCHEDULER_CONFIG, (4, 32, 32)),
    "sd-64": (SD_SMALL_UNET, rm.SD15_SCHEDULER_CONFIG, (4, 64, 64)),
    # The full-size SD 1.5 UNet (about 10 s a call on 2 CPU cores at batch 1 and 4x32x32);
    # 4x64x64 (512x512 images) is its native latent size, for a GPU.
    "sd-full": (rm.SD15_UNET_CONFIG, rm.SD15_SCHEDULER_CONFIG, (4, 32, 32)),
    "sd-full-64": (rm.SD15_UNET_CONFIG, rm.SD15_SCHEDULER_CONFIG, (4, 64, 64)),
}


def make_unet_model(kind, dtype, key=None):
    """A random-weight diffusers UNet (the Flax port, `rexjax.models.random_unet`) with its
    discrete training schedule as a `DiffusionTerm` (noise prediction, `t -> tN - 1`), its
    conditioning `args` (random 77x768 text embeddings for the SD UNets, else `None`), the
    data shape and a label."""
    config, scheduler, shape = UNET_MODELS[kind]
    key = jax.random.key(0) if key is None else key
    unet = rm.random_unet(config, key, dtype)
    term = rm.diffusion_term(unet, scheduler)
    n_params = sum(p.size for p in jax.tree_util.tree_leaves(unet.params))
    args = None
    if unet.conditional:
        args = jax.random.normal(jax.random.key(7), (BATCH, 77, config["cross_attention_dim"]))
        args = args.astype(dtype)
    label = (
        f"random-weight {config['_class_name']} (Flax port, {n_params:,} parameters, "
        f"widths {config['block_out_channels']}), {'x'.join(map(str, shape))}, "
        f"discrete {scheduler['beta_schedule']} schedule"
    )
    return term, args, shape, label


class Problem(NamedTuple):
    term: rx.DiffusionTerm
    args: Any  # the model's conditioning
    x0: Array  # the data
    noise: Array  # for the equal-NFE sampling study
    label: str


def make_problem(name, dtype):
    """The `Problem` for model `name` in `dtype` (the same data and noise in every dtype)."""
    key_data, key_noise = jax.random.split(jax.random.key(42))
    args = None
    if name == "gmm":
        schedule = rx.VPSchedule.linear(0.1, 20.0)
        gmm = rx.GaussianMixture.default(schedule)

        def model(t, x, args):
            return jax.vmap(lambda xi: gmm(t, xi))(x)

        term = rx.DiffusionTerm(model, schedule, "noise")
        x0 = gmm.sample_data(key_data, 32, dtype=jnp.float64).astype(dtype)
        label = "analytic Gaussian mixture (16-d, 6 components, exact noise prediction)"
    else:
        term, args, shape, label = make_unet_model(name, dtype)
        x0 = jax.random.uniform(key_data, (BATCH, *shape), jnp.float64, -1.0, 1.0).astype(dtype)
    noise = jax.random.normal(key_noise, x0.shape, jnp.float64).astype(dtype)
    return Problem(term, args, x0, noise, label)


# ----------------------------------------------------------------------------- runners


@eqx.filter_jit
def forward(term, solver, y, state, ts, n, args):
    """`n` steps of `solver.step` along the padded decreasing grid `ts` (as `rexjax.sample`)."""

    def body(carry):
        i, y, state = carry
        y1, _, _, state1, _ = solver.step(term, ts[i], ts[i + 1], y, args, state, False)
        return i + 1, y1, state1

    _, y, state = jax.lax.while_loop(lambda c: c[0] < n, body, (0, y, state))
    return y, state


@eqx.filter_jit
def backward(term, solver, y, state, ts, n, args):
    """`n` backward steps from `ts[n]` to `ts[0]` (as `rexjax.invert`)."""

    def body(carry):
        i, y, state = carry
        y0, _, state0, _ = solver.backward_step(term, ts[i], ts[i + 1], y, args, None, state, False)
        return i - 1, y0, state0

    _, y, state = jax.lax.while_loop(lambda c: c[0] >= 0, body, (n - 1, y, state))
    return y, state


def padded_grid(schedule, n, dtype):
    ts = np.asarray(rx.log_snr_grid(schedule, T_START, T_END, n))
    out = np.full(MAX_STEPS + 1, T_END)
    out[: n + 1] = ts
    return jnp.asarray(out, dtype)


def drift(problem, method, solver, ts):
    """The diffrax term `solver` integrates along the grid `ts`: the PF-ODE, or the reverse SDE
    (one Brownian path, the same for `invert` and `sample`, as `rexjax.invert/sample(key=)`)."""
    if not method.sde:
        return problem.term
    return rx.reverse_sde(problem.term, solver, jax.random.key(3), ts, problem.x0)


def round_trip(problem, method, n, dtype):
    solver = grid_solver(method, problem.term.schedule, n, dtype)
    ts = padded_grid(problem.term.schedule, n, dtype)
    term = drift(problem, method, solver, ts[: n + 1])
    state = solver.init(term, ts[n], ts[0], problem.x0, problem.args)
    lat, lat_state = backward(term, solver, problem.x0, state, ts, n, problem.args)
    rec, _ = forward(term, solver, lat, lat_state, ts, n, problem.args)
    return lat, rec


def sample_from_noise(problem, solver, n, dtype):
    ts = padded_grid(problem.term.schedule, n, dtype)
    state = solver.init(problem.term, ts[0], ts[n], problem.noise, problem.args)
    return forward(problem.term, solver, problem.noise, state, ts, n, problem.args)[0]


def pf_reference(problem64, y, t0, t1):
    """The probability-flow ODE solved accurately in float64: `(solution, error estimate,
    description)`.

    - Continuous schedule (the mixture): adaptive Dopri8, rtol = atol = 1e-10.
    - Discrete schedule (the UNets): log(alpha) is interpolated linearly between the training
      timesteps, so the drift has kinks in t, and the random networks make the ODE stiff;
      adaptive Dopri8 needed more than 10 minutes there. Instead Princeps(Tsit5, noise) (an
      exponential integrator, exact on the linear part) on a 1000-step log-SNR grid; its error
      is estimated against the 500-step solution.
    """
    term, args = problem64.term, problem64.args
    y = y.astype(jnp.float64)
    if not isinstance(term.schedule, rx.DiscreteVPSchedule):
        sol = diffrax.diffeqsolve(
            term,
            diffrax.Dopri8(),
            t0=t0,
            t1=t1,
            dt0=(t1 - t0) * 1e-3,
            y0=y,
            args=args,
            stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
            max_steps=100_000,
        )
        return sol.ys[-1], 1e-10, f"adaptive Dopri8 ({int(sol.stats['num_steps'])} steps)"
    solver = rx.Princeps(diffrax.Tsit5(), "noise")
    out = []
    for n in (500, 1000):
        ts = rx.log_snr_grid(term.schedule, max(t0, t1), min(t0, t1), n)
        if t0 < t1:  # inversion: integrate the same grid backwards in time
            sol = diffrax.diffeqsolve(
                term,
                solver,
                t0=ts[-1],
                t1=ts[0],
                dt0=None,
                y0=y,
                args=args,
                stepsize_controller=diffrax.StepTo(ts[::-1]),
                max_steps=n,
            )
            out.append(sol.ys[-1])
        else:
            out.append(rx.sample(term, solver, y, ts, args))
    return out[1], rel_rms(out[0], out[1]), "Princeps(Tsit5, noise), 1000 log-SNR steps"


def nfe_per_step(problem, method, dtype):
    """(model evaluations in `init`, per `step`), counted while tracing one step."""
    calls = [0]
    term = problem.term

    def counting(t, x, args):
        calls[0] += 1
        return term.model(t, x, args)

    problem = problem._replace(term=rx.DiffusionTerm(counting, term.schedule, term.model_type))
    solver = grid_solver(method, term.schedule, 1, dtype)
    ts = jnp.asarray([T_START, T_END], dtype)
    cterm = drift(problem, method, solver, ts)
    x0, args = problem.x0, problem.args
    state = jax.eval_shape(lambda: solver.init(cterm, ts[0], ts[1], x0, args))
    n_init = calls[0]
    jax.eval_shape(lambda s: solver.step(cterm, ts[0], ts[1], x0, args, s, False), state)
    return n_init, calls[0] - n_init


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.all(np.isfinite(a)):
        return float("inf")  # diverged
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def rel_rms(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.all(np.isfinite(a)):
        return float("inf")
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def mse(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.all(np.isfinite(a)):
        return float("inf")
    return float(np.mean((a - b) ** 2))


def check_against_public_api(log):
    """The loops above equal `rexjax.invert` / `rexjax.sample` (float64, 10 steps), for the
    ODE and, with the same key, the SDE."""
    problem = make_problem("gmm", jnp.float64)
    term, x0 = problem.term, problem.x0
    ts = rx.log_snr_grid(term.schedule, T_START, T_END, 10)
    worst = 0.0
    for method in [*baseline_methods(), *rex_methods()[:1], *sde_methods()]:
        solver = grid_solver(method, term.schedule, 10, jnp.float64)
        key = jax.random.key(3) if method.sde else None
        lat = rx.invert(term, solver, x0, ts, key=key)
        rec = rx.sample(term, solver, lat, ts, key=key)
        lat2, rec2 = round_trip(problem, method, 10, jnp.float64)
        worst = max(worst, rel(lat2, lat.y), rel(rec2, rec))
    log(f"start-up check: loops vs rexjax.invert/sample, max relative difference {worst:.1e}")
    if worst > 1e-13:
        raise RuntimeError("The benchmark loops disagree with rexjax.invert/sample.")


# ----------------------------------------------------------------------------- study


def select_methods(spec):
    """Methods from a comma-separated list of set names (`METHOD_SETS`) and method names."""
    every = [m for make in METHOD_SETS.values() for m in make()]
    chosen = []
    for item in spec.split(","):
        if item in METHOD_SETS:
            chosen += METHOD_SETS[item]()
        else:
            match = [m for m in every if m.name == item]
            if not match:
                raise ValueError(
                    f"Unknown method {item!r}; use {sorted(METHOD_SETS)} or one of "
                    f"{[m.name for m in every]}."
                )
            chosen += match
    return chosen


def run_model(name, methods, log, rt_rows, nfe_rows, nfe=True, latent=True, partial=None):
    for dtype in DTYPES:
        problem = make_problem(name, dtype)
        dname = jnp.dtype(dtype).name
        log(f"\n== model {name}: {problem.label}; {dname}; data shape {problem.x0.shape}")
        t_start = time.time()
        ref_latent = None
        if latent and any(not m.sde for m in methods):
            problem64 = make_problem(name, jnp.float64)
            ref_latent, ref_err, how = pf_reference(problem64, problem.x0, T_END, T_START)
            elapsed = time.time() - t_start
            log(f"   PF-ODE reference latent: {how}, est. error {ref_err:.1e} ({elapsed:.0f} s)")
        for method in methods:
            print(f"   {method.name} ({time.time() - t_start:.0f} s)", flush=True)
            n_init, n_step = nfe_per_step(problem, method, dtype)
            for n in STEPS:
                lat, rec = round_trip(problem, method, n, dtype)
                compare_latent = ref_latent is not None and not method.sde
                rt_rows.append(
                    dict(
                        model=name,
                        dtype=dname,
                        method=method.name,
                        steps=n,
                        nfe=n_init + n * n_step,
                        rt_mse=mse(rec, problem.x0),
                        rt_maxrel=rel(rec, problem.x0),
                        latent_rel=rel_rms(lat, ref_latent) if compare_latent else float("nan"),
                    )
                )
            if partial is not None:  # keep what is done if the run is cut short
                write_csv(rt_rows, partial)
            # Each method compiles its own loops; dropping them keeps a long run within the
            # process's memory-map limit (a full U-Net sweep once died with "LLVM ERROR: Unable
            # to allocate section memory").
            jax.clear_caches()
        log(f"   round trips done in {time.time() - t_start:.0f} s")
        if not nfe or (dtype != jnp.float64 and jnp.float64 in DTYPES):
            continue  # equal-NFE sampling accuracy: in float64 (or the only dtype run)
        ode_methods = [m for m in methods if not m.sde]  # SDE samples have no PF reference
        if not ode_methods:
            continue
        t_start = time.time()
        ref_sample, ref_err, how = pf_reference(
            make_problem(name, jnp.float64), problem.noise, T_START, T_END
        )
        log(f"   PF-ODE reference sample: {how}, est. error {ref_err:.1e}")
        for method in ode_methods:
            n_init, n_step = nfe_per_step(problem, method, dtype)
            for budget in NFE_BUDGETS:
                n = min(max(1, (budget - n_init) // n_step), MAX_STEPS)
                out = sample_from_noise(problem, method.solver, n, dtype)
                nfe_rows.append(
                    dict(
                        model=name,
                        dtype=dname,
                        method=method.name,
                        budget=budget,
                        steps=n,
                        nfe=n_init + n * n_step,
                        sample_rel=rel_rms(out, ref_sample),
                    )
                )
        log(f"   equal-NFE sampling done in {time.time() - t_start:.0f} s")


def print_tables(rt_rows, nfe_rows, log):
    for model in dict.fromkeys(r["model"] for r in rt_rows):
        for dname in ("float32", "float64"):
            rows = [r for r in rt_rows if r["model"] == model and r["dtype"] == dname]
            if not rows:
                continue
            for key, title in (
                ("rt_maxrel", "round trip, max rel."),
                ("latent_rel", "latent, rel. RMS"),
            ):
                if all(np.isnan(r[key]) for r in rows):
                    continue  # not measured (SDE methods, or --no-latent)
                log(f"\n[{model}, {dname}] {title} error vs steps")
                steps = sorted({r["steps"] for r in rows})
                log(f"{'method':32s}" + "".join(f"{n:>10d}" for n in steps))
                for m in dict.fromkeys(r["method"] for r in rows):
                    vals = {r["steps"]: f"{r[key]:10.1e}" for r in rows if r["method"] == m}
                    log(f"{m:32s}" + "".join(vals.get(n, f"{'-':>10s}") for n in steps))
        rows = [r for r in nfe_rows if r["model"] == model]
        if rows:
            dname = rows[0]["dtype"]
            log(f"\n[{model}, {dname}] sample error (rel. RMS) vs NFE budget (steps in brackets)")
            log(f"{'method':32s}" + "".join(f"{b:>16d}" for b in NFE_BUDGETS))
            for m in dict.fromkeys(r["method"] for r in rows):
                vals = {r["budget"]: r for r in rows if r["method"] == m}
                cells = [
                    f"{vals[b]['sample_rel']:9.1e} ({vals[b]['steps']:3d})" for b in NFE_BUDGETS
                ]
                log(f"{m:32s}" + "".join(f"{c:>16s}" for c in cells))


def verdicts(rt_rows, log):
    """Does Rex's float32 round trip beat every baseline at 50 steps? Said plainly."""
    log("\nVerdict: float32 round trip (max rel.) at 50 steps, Rex vs every baseline")
    names = {m.name for m in baseline_methods()}
    for model in dict.fromkeys(r["model"] for r in rt_rows):
        rows = {
            r["method"]: r["rt_maxrel"]
            for r in rt_rows
            if r["model"] == model and r["dtype"] == "float32" and r["steps"] == 50
        }
        if not rows:
            continue
        if not names & rows.keys():
            continue
        best_base = min((v, m) for m, v in rows.items() if m in names)
        log(f"[{model}] best baseline: {best_base[1]} {best_base[0]:.1e}")
        for m, v in rows.items():
            if m in names:
                continue
            worse = [b for b in names if b in rows and rows[b] <= v]
            verdict = "beats every baseline" if not worse else "does NOT beat " + ", ".join(worse)
            log(f"   {m:24s} {v:.1e}  {verdict}")


def _styles(methods, colours):
    """One colour per method, the same in every panel; line style and marker by family:
    baselines dashed, Rex data solid, Rex noise dash-dotted, Rex SDE dotted."""
    styles = {}
    for i, m in enumerate(methods):
        if not m.startswith("Rex"):
            ls, marker = "--", "s"
        elif m.endswith("SDE"):
            ls, marker = ":", "x"
        elif " noise" in m:
            ls, marker = "-.", "^"
        else:
            ls, marker = "-", "o"
        styles[m] = dict(color=colours[i % len(colours)], linestyle=ls, marker=marker, ms=3)
    return styles


def _legend(fig, axes, methods):
    """One legend for the figure, every method once, in `methods` order."""
    handles = {}
    for ax in axes.flat:
        handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    order = [m for m in methods if m in handles]
    if order:
        fig.legend([handles[m] for m in order], order, fontsize=7, loc="outside right center")


def plot(rt_rows, nfe_rows, out, suffix, log):
    try:
        import matplotlib
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[experiments]'): no plots written.")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    models = list(dict.fromkeys(r["model"] for r in rt_rows))
    methods = list(dict.fromkeys(r["method"] for r in [*rt_rows, *nfe_rows]))
    styles = _styles(methods, plt.get_cmap("tab20").colors)
    for key, title in (("rt_maxrel", "round trip (max rel.)"), ("latent_rel", "latent (rel. RMS)")):
        if all(np.isnan(r[key]) for r in rt_rows):
            continue  # not measured
        fig, axes = plt.subplots(
            len(models),
            2,
            figsize=(14, 4 * len(models)),
            squeeze=False,
            sharex=True,
            layout="constrained",
        )
        for i, model in enumerate(models):
            for j, dname in enumerate(("float32", "float64")):
                ax = axes[i, j]
                rows = [r for r in rt_rows if r["model"] == model and r["dtype"] == dname]
                for m in dict.fromkeys(r["method"] for r in rows):
                    pts = sorted((r["steps"], max(r[key], 1e-17)) for r in rows if r["method"] == m)
                    ax.loglog(*zip(*pts, strict=True), label=m, **styles[m])
                ax.set_title(f"{model}, {dname}: {title} error")
                ax.set_xlabel("steps")
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                ax.grid(True, which="both", alpha=0.3)
        _legend(fig, axes, methods)
        name = "roundtrip" if key == "rt_maxrel" else key
        fig.savefig(out / f"reconstruction_{name}{suffix}.png")
        plt.close(fig)
    if nfe_rows:
        fig, axes = plt.subplots(
            1, len(models), figsize=(7 * len(models), 4), squeeze=False, layout="constrained"
        )
        for i, model in enumerate(models):
            ax = axes[0, i]
            rows = [r for r in nfe_rows if r["model"] == model]
            for m in dict.fromkeys(r["method"] for r in rows):
                pts = sorted(
                    (r["nfe"], max(r["sample_rel"], 1e-17)) for r in rows if r["method"] == m
                )
                ax.loglog(*zip(*pts, strict=True), label=m, **styles[m])
            ax.set_title(f"{model}, {rows[0]['dtype']}: sample error (rel. RMS) vs NFE")
            ax.set_xlabel("NFE")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.grid(True, which="both", alpha=0.3)
        _legend(fig, axes, methods)
        fig.savefig(out / f"reconstruction_nfe{suffix}.png")
        plt.close(fig)


def report(paths, out, suffix, log):
    """Merge round-trip CSVs written by earlier runs; print, plot and save them as one."""
    rows = []
    for path in paths:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                for k in ("steps", "nfe"):
                    r[k] = int(r[k])
                for k in ("rt_mse", "rt_maxrel", "latent_rel"):
                    r[k] = float(r[k])
                rows.append(r)
    log("Merged from: " + ", ".join(Path(p).name for p in paths))
    print_tables(rows, [], log)
    verdicts(rows, log)
    write_csv(rows, out / f"reconstruction_roundtrip{suffix}.csv")
    plot(rows, [], out, suffix, log)


def main():
    global STEPS, DTYPES, BATCH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="gmm,ddpm,sd", help="gmm, ddpm, sd, sd-64, sd-full, sd-full-64"
    )
    parser.add_argument(
        "--methods",
        default="baselines,rex,ees,sde",
        help="method sets (baselines, rex, ees, sde) or single method names, comma-separated",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--no-nfe", action="store_true", help="skip the equal-NFE study")
    parser.add_argument("--no-check", action="store_true", help="skip the start-up check")
    parser.add_argument("--batch", type=int, default=2, help="images per batch (U-Nets)")
    parser.add_argument(
        "--no-latent", action="store_true", help="skip the PF-ODE reference latent (costly)"
    )
    parser.add_argument(
        "--report",
        nargs="+",
        metavar="CSV",
        help="no run: merge these round-trip CSVs (e.g. runs cut short, or one per dtype) into "
        "one CSV, table, verdict and plot named after --models",
    )
    args = parser.parse_args()
    STEPS = tuple(int(n) for n in args.steps.split(","))
    DTYPES = tuple(jnp.dtype(d).type for d in args.dtypes.split(","))
    BATCH = args.batch
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log()
    log(
        f"rexjax reconstruction study, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} "
        f"UTC, {jax.devices()[0].platform.upper()}, {os.cpu_count()} cores, jax {jax.__version__}"
    )
    suffix = "_" + args.models.replace(",", "_").replace("-", "_")
    if args.report:
        report(args.report, out, suffix, log)
        log.save(out / f"reconstruction_log{suffix}.txt")
        return 0
    log(f"grid: log-SNR uniform, t = {T_START} -> {T_END}; steps {STEPS}; Rex coupling 0.999")
    methods = select_methods(args.methods)
    log("methods: " + ", ".join(m.name for m in methods))
    log(
        "SDE variants: the reverse SDE with one Brownian path (key 3) for invert and sample; "
        "noise-prediction coupling = floor_0.01(exp(-2 dlambda)) per grid; no latent or "
        "equal-NFE comparison (the PF-ODE latent is not theirs)."
    )
    if not args.no_check:
        check_against_public_api(log)
    rt_rows, nfe_rows = [], []
    if args.methods != "baselines,rex,ees,sde":
        suffix += "_" + re.sub(r"[^a-z0-9]+", "_", args.methods.lower()).strip("_")
    for name in args.models.split(","):
        run_model(
            name,
            methods,
            log,
            rt_rows,
            nfe_rows,
            nfe=not args.no_nfe,
            latent=not args.no_latent,
            partial=out / f"reconstruction_roundtrip{suffix}_partial.csv",
        )
    print_tables(rt_rows, nfe_rows, log)
    verdicts(rt_rows, log)
    for rows, fname in ((rt_rows, "roundtrip"), (nfe_rows, "nfe")):
        if rows:
            write_csv(rows, out / f"reconstruction_{fname}{suffix}.csv")
    (out / f"reconstruction_roundtrip{suffix}_partial.csv").unlink(missing_ok=True)
    plot(rt_rows, nfe_rows, out, suffix, log)
    log.save(out / f"reconstruction_log{suffix}.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
