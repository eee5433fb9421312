"""Reconstruction study: Rex against the established inversion methods (Rex paper protocol).

For each model, floating-point type, method and number of steps N (10, 20, 50, 100, 200) on a
log-SNR grid from t=1 to t=1e-3:

- round trip: data x0 -> `invert` -> latent -> `sample` -> x0'; MSE and max relative error
  max|x0' - x0| / max|x0|;
- latent accuracy: the encoded latent against the true probability-flow latent of x0 (an
  adaptive Dopri8 solve of the PF-ODE in float64, rtol = atol = 1e-10), relative RMS
  ||lat - ref|| / ||ref||;
- sample accuracy at equal NFE (float64): noise -> `sample` against the PF-ODE reference, with
  as many steps as the NFE budget allows, relative RMS. (RMS rather than max: on the mixture a
  single sample near a decision boundary that lands in another mode dominates the max.)

Models: (a) the analytic Gaussian mixture `rexjax.GaussianMixture.default` (16-d, exact
denoiser); (b) a random-weight U-Net stand-in for diffusers' `UNet2DModel` (3x32x32);
(c) a random-weight SD-like U-Net stand-in (attention, 4x32x32 latents). (b) and (c) are
equinox stand-ins until the Flax ports land (see `make_unet_model`).

Run: `python experiments/reconstruction.py [--models gmm,ddpm,sd] [--out DIR]`. Writes
`results/reconstruction_{roundtrip,nfe}.csv`, `results/reconstruction_*.png` and the printed
table `results/reconstruction_log.txt`.

The loops below call each solver's `step` / `backward_step` exactly as `rexjax.sample`
(`diffeqsolve` + `StepTo`) and `rexjax.invert` do, inside one `lax.while_loop` over a padded
grid so that each (method, dtype, model) compiles once for all N; the script checks at start-up
that they agree with `rexjax.sample` / `rexjax.invert` to round-off.
"""

import argparse
import csv
import datetime
import os
import sys
import time
from pathlib import Path


# A diverging method (e.g. BDIA with gamma < 1 inverted over many steps) must not abort the
# study: rexjax's finiteness checks return NaN instead of raising, recorded as inf below.
os.environ.setdefault("EQX_ON_ERROR", "nan")

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


jax.config.update("jax_enable_x64", True)

import rexjax as rx  # noqa: E402
from rexjax.baselines import BDIA, BELM, DDIM, EDICT, DPMSolverPP  # noqa: E402


STEPS = (10, 20, 50, 100, 200)
NFE_BUDGETS = (24, 48, 96, 192)
T_START, T_END = 1.0, 1e-3
DTYPES = (jnp.float32, jnp.float64)
BATCH = 2  # images per batch for the U-Net models
MAX_STEPS = 200  # grids are padded to this length: one compilation per method for all N


# ----------------------------------------------------------------------------- methods


def baseline_methods():
    return [
        ("DDIM (naive inv.)", DDIM()),
        ("DPM-Solver++(2M) (naive inv.)", DPMSolverPP()),
        ("EDICT p=0.93", EDICT(0.93)),
        ("BDIA g=1", BDIA(1.0)),
        ("BDIA g=0.5", BDIA(0.5)),
        ("O-BELM", BELM()),
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
        (f"Rex {name} {pred}", rx.Rex(base, pred, 0.999))
        for name, base in bases
        for pred in ("data", "noise")
    ]


# ----------------------------------------------------------------------------- models


def _timestep_embedding(t, dim):
    half = dim // 2
    freqs = jnp.exp(-float(np.log(10000.0)) * jnp.arange(half, dtype=t.dtype) / half)
    args = 1000 * t * freqs
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)])


class _SelfAttention(eqx.Module):
    norm: eqx.nn.GroupNorm
    qkv: eqx.nn.Conv2d
    out: eqx.nn.Conv2d

    def __init__(self, channels, key):
        k1, k2 = jax.random.split(key)
        self.norm = eqx.nn.GroupNorm(8, channels)
        self.qkv = eqx.nn.Conv2d(channels, 3 * channels, 1, key=k1)
        self.out = eqx.nn.Conv2d(channels, channels, 1, key=k2)

    def __call__(self, x):
        c, h, w = x.shape
        q, k, v = jnp.split(self.qkv(self.norm(x)).reshape(3 * c, h * w), 3)
        att = jax.nn.softmax(q.T @ k / float(np.sqrt(c)), axis=-1)
        return x + self.out((v @ att.T).reshape(c, h, w))


class _ResBlock(eqx.Module):
    norm1: eqx.nn.GroupNorm
    conv1: eqx.nn.Conv2d
    temb: eqx.nn.Linear
    norm2: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    skip: eqx.nn.Conv2d | None

    def __init__(self, c_in, c_out, t_dim, key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.norm1 = eqx.nn.GroupNorm(min(8, c_in), c_in)
        self.conv1 = eqx.nn.Conv2d(c_in, c_out, 3, padding=1, key=k1)
        self.temb = eqx.nn.Linear(t_dim, c_out, key=k2)
        self.norm2 = eqx.nn.GroupNorm(8, c_out)
        self.conv2 = eqx.nn.Conv2d(c_out, c_out, 3, padding=1, key=k3)
        self.skip = None if c_in == c_out else eqx.nn.Conv2d(c_in, c_out, 1, key=k4)

    def __call__(self, x, emb):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.temb(jax.nn.silu(emb))[:, None, None]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class RandomUNet(eqx.Module):
    """A two-level U-Net (ResNet blocks with GroupNorm and SiLU, sinusoidal time embedding,
    optional self-attention at the low resolution) with random weights, predicting noise for
    a batch `(b, c, h, w)`. A stand-in for diffusers' `UNet2DModel` / the SD 1.5 UNet."""

    t_dim: int = eqx.field(static=True)
    temb: eqx.nn.MLP
    conv_in: eqx.nn.Conv2d
    down: _ResBlock
    downsample: eqx.nn.Conv2d
    mid: _ResBlock
    attn: _SelfAttention | None
    up: eqx.nn.ConvTranspose2d
    up_block: _ResBlock
    norm_out: eqx.nn.GroupNorm
    conv_out: eqx.nn.Conv2d

    def __init__(self, channels, width, attention, key):
        keys = jax.random.split(key, 9)
        self.t_dim = width
        self.temb = eqx.nn.MLP(width, width, width, 1, activation=jax.nn.silu, key=keys[0])
        self.conv_in = eqx.nn.Conv2d(channels, width, 3, padding=1, key=keys[1])
        self.down = _ResBlock(width, width, width, keys[2])
        self.downsample = eqx.nn.Conv2d(width, width, 3, stride=2, padding=1, key=keys[3])
        self.mid = _ResBlock(width, 2 * width, width, keys[4])
        self.attn = _SelfAttention(2 * width, keys[5]) if attention else None
        self.up = eqx.nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, key=keys[6])
        self.up_block = _ResBlock(2 * width, width, width, keys[7])
        self.norm_out = eqx.nn.GroupNorm(8, width)
        self.conv_out = eqx.nn.Conv2d(width, channels, 3, padding=1, key=keys[8])

    def _single(self, t, x):
        emb = self.temb(_timestep_embedding(t.astype(x.dtype), self.t_dim))
        h0 = self.down(self.conv_in(x), emb)
        h = self.mid(self.downsample(h0), emb)
        if self.attn is not None:
            h = self.attn(h)
        h = self.up_block(jnp.concatenate([self.up(h), h0]), emb)
        return self.conv_out(jax.nn.silu(self.norm_out(h)))

    def __call__(self, t, x, args=None):
        t = jnp.asarray(t)
        return jax.vmap(lambda xi: self._single(t, xi))(x)


def cast_floats(tree, dtype):
    return jax.tree_util.tree_map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)


def make_unet_model(kind, dtype, key=None):
    """A random-weight noise-prediction network: `(model, shape, schedule, label)`.

    `kind="ddpm"`: stand-in for a small diffusers `UNet2DModel` on 3x32x32 images (DDPM
    linear schedule); `kind="sd"`: stand-in for the SD 1.5 UNet on 4x32x32 latents (wider,
    with attention; SD's scaled-linear schedule). To use the Flax ports of `rexjax.models`,
    return them here (same call signature `model(t, x, args)` on a batch).
    """
    key = jax.random.key(0) if key is None else key
    if kind == "ddpm":
        net = RandomUNet(3, 32, attention=False, key=key)
        shape, schedule = (3, 32, 32), rx.VPSchedule.linear(0.1, 20.0)
        label = "random UNet stand-in (equinox U-Net, 3x32x32, DDPM linear schedule)"
    elif kind == "sd":
        net = RandomUNet(4, 64, attention=True, key=key)
        shape, schedule = (4, 32, 32), rx.VPSchedule.scaled_linear(0.00085, 0.012)
        label = "random SD-like UNet stand-in (equinox U-Net + attention, 4x32x32 latents)"
    else:
        raise ValueError(f"Unknown kind {kind!r}; use 'ddpm' or 'sd'.")
    return cast_floats(net, dtype), shape, schedule, label


def make_problem(name, dtype):
    """`(term, x0, noise, label)` for model `name` in `dtype`."""
    key_data, key_noise = jax.random.split(jax.random.key(42))
    if name == "gmm":
        schedule = rx.VPSchedule.linear(0.1, 20.0)
        gmm = rx.GaussianMixture.default(schedule)

        def model(t, x, args):
            return jax.vmap(lambda xi: gmm(t, xi))(x)

        x0 = gmm.sample_data(key_data, 32, dtype=dtype)
        label = "analytic Gaussian mixture (16-d, 6 components, exact noise prediction)"
    else:
        model, shape, schedule, label = make_unet_model(name, dtype)
        x0 = jax.random.uniform(key_data, (BATCH, *shape), dtype, -1.0, 1.0)
    noise = jax.random.normal(key_noise, x0.shape, dtype)
    return rx.DiffusionTerm(model, schedule, "noise"), x0, noise, label


# ----------------------------------------------------------------------------- runners


@eqx.filter_jit
def forward(term, solver, y, state, ts, n):
    """`n` steps of `solver.step` along the padded decreasing grid `ts` (as `rexjax.sample`)."""

    def body(carry):
        i, y, state = carry
        y1, _, _, state1, _ = solver.step(term, ts[i], ts[i + 1], y, None, state, False)
        return i + 1, y1, state1

    _, y, state = jax.lax.while_loop(lambda c: c[0] < n, body, (0, y, state))
    return y, state


@eqx.filter_jit
def backward(term, solver, y, state, ts, n):
    """`n` backward steps from `ts[n]` to `ts[0]` (as `rexjax.invert`)."""

    def body(carry):
        i, y, state = carry
        y0, _, state0, _ = solver.backward_step(term, ts[i], ts[i + 1], y, None, None, state, False)
        return i - 1, y0, state0

    _, y, state = jax.lax.while_loop(lambda c: c[0] >= 0, body, (n - 1, y, state))
    return y, state


def padded_grid(schedule, n, dtype):
    ts = np.asarray(rx.log_snr_grid(schedule, T_START, T_END, n))
    out = np.full(MAX_STEPS + 1, T_END)
    out[: n + 1] = ts
    return jnp.asarray(out, dtype)


def round_trip(term, solver, x0, n, dtype):
    ts = padded_grid(term.schedule, n, dtype)
    state = solver.init(term, ts[n], ts[0], x0, None)
    lat, lat_state = backward(term, solver, x0, state, ts, n)
    rec, _ = forward(term, solver, lat, lat_state, ts, n)
    return lat, rec


def sample_from_noise(term, solver, noise, n, dtype):
    ts = padded_grid(term.schedule, n, dtype)
    state = solver.init(term, ts[0], ts[n], noise, None)
    return forward(term, solver, noise, state, ts, n)[0]


def pf_reference(term, y, t0, t1):
    """The probability-flow ODE solved accurately (float64, adaptive Dopri8)."""
    sol = diffrax.diffeqsolve(
        term,
        diffrax.Dopri8(),
        t0=t0,
        t1=t1,
        dt0=(t1 - t0) * 1e-3,
        y0=y.astype(jnp.float64),
        stepsize_controller=diffrax.PIDController(rtol=1e-10, atol=1e-10),
        max_steps=100_000,
    )
    return sol.ys[-1]


def nfe_per_step(term, solver, y, dtype):
    """(model evaluations in `init`, per `step`), counted on one eager step."""
    calls = [0]

    def counting(t, x, args):
        calls[0] += 1
        return term.model(t, x, args)

    cterm = rx.DiffusionTerm(counting, term.schedule, term.model_type)
    ts = jnp.asarray([T_START, 0.5], dtype)
    state = solver.init(cterm, ts[0], ts[1], y, None)
    n_init = calls[0]
    solver.step(cterm, ts[0], ts[1], y, None, state, False)
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
    """The loops above equal `rexjax.invert` / `rexjax.sample` (float64, 10 steps)."""
    term, x0, _, _ = make_problem("gmm", jnp.float64)
    ts = rx.log_snr_grid(term.schedule, T_START, T_END, 10)
    worst = 0.0
    for _, solver in [*baseline_methods(), *rex_methods()[:1]]:
        lat = rx.invert(term, solver, x0, ts)
        rec = rx.sample(term, solver, lat, ts)
        lat2, rec2 = round_trip(term, solver, x0, 10, jnp.float64)
        worst = max(worst, rel(lat2, lat.y), rel(rec2, rec))
    log(f"start-up check: loops vs rexjax.invert/sample, max relative difference {worst:.1e}")
    if worst > 1e-13:
        raise RuntimeError("The benchmark loops disagree with rexjax.invert/sample.")


# ----------------------------------------------------------------------------- study


def run_model(name, log, rt_rows, nfe_rows, nfe=True, latent=True, partial=None):
    methods = [*baseline_methods(), *rex_methods()]
    for dtype in DTYPES:
        term, x0, noise, label = make_problem(name, dtype)
        term64 = make_problem(name, jnp.float64)[0]
        dname = jnp.dtype(dtype).name
        log(f"\n== model {name}: {label}; {dname}; data shape {x0.shape}")
        t_start = time.time()
        ref_latent = pf_reference(term64, x0, T_END, T_START) if latent else None
        for mname, solver in methods:
            print(f"   {mname} ({time.time() - t_start:.0f} s)", flush=True)
            n_init, n_step = nfe_per_step(term, solver, x0, dtype)
            for n in STEPS:
                lat, rec = round_trip(term, solver, x0, n, dtype)
                rt_rows.append(
                    dict(
                        model=name,
                        dtype=dname,
                        method=mname,
                        steps=n,
                        nfe=n_init + n * n_step,
                        rt_mse=mse(rec, x0),
                        rt_maxrel=rel(rec, x0),
                        latent_rel=rel_rms(lat, ref_latent) if latent else float("nan"),
                    )
                )
            if partial is not None:  # keep what is done if the run is cut short
                write_csv(rt_rows, partial)
        log(f"   round trips done in {time.time() - t_start:.0f} s")
        if not nfe or (dtype != jnp.float64 and jnp.float64 in DTYPES):
            continue  # equal-NFE sampling accuracy: in float64 (or the only dtype run)
        t_start = time.time()
        ref_sample = pf_reference(term64, noise, T_START, T_END)
        for mname, solver in methods:
            n_init, n_step = nfe_per_step(term, solver, x0, dtype)
            for budget in NFE_BUDGETS:
                n = min(max(1, (budget - n_init) // n_step), MAX_STEPS)
                out = sample_from_noise(term, solver, noise, n, dtype)
                nfe_rows.append(
                    dict(
                        model=name,
                        dtype=dname,
                        method=mname,
                        budget=budget,
                        steps=n,
                        nfe=n_init + n * n_step,
                        sample_rel=rel_rms(out, ref_sample),
                    )
                )
        log(f"   equal-NFE sampling done in {time.time() - t_start:.0f} s")


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


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
                log(f"\n[{model}, {dname}] {title} error vs steps")
                log(f"{'method':32s}" + "".join(f"{n:>10d}" for n in STEPS))
                for m in dict.fromkeys(r["method"] for r in rows):
                    vals = {r["steps"]: r[key] for r in rows if r["method"] == m}
                    log(f"{m:32s}" + "".join(f"{vals[n]:10.1e}" for n in STEPS))
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
    names = {m for m, _ in baseline_methods()}
    for model in dict.fromkeys(r["model"] for r in rt_rows):
        rows = {
            r["method"]: r["rt_maxrel"]
            for r in rt_rows
            if r["model"] == model and r["dtype"] == "float32" and r["steps"] == 50
        }
        if not rows:
            continue
        best_base = min((v, m) for m, v in rows.items() if m in names)
        log(f"[{model}] best baseline: {best_base[1]} {best_base[0]:.1e}")
        for m, v in rows.items():
            if m in names:
                continue
            worse = [b for b in names if rows[b] <= v]
            verdict = "beats every baseline" if not worse else "does NOT beat " + ", ".join(worse)
            log(f"   {m:24s} {v:.1e}  {verdict}")


def plot(rt_rows, nfe_rows, out, suffix):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rt_rows))
    for key, title in (("rt_maxrel", "round trip (max rel.)"), ("latent_rel", "latent (rel. RMS)")):
        fig, axes = plt.subplots(
            len(models), 2, figsize=(12, 4 * len(models)), squeeze=False, sharex=True
        )
        for i, model in enumerate(models):
            for j, dname in enumerate(("float32", "float64")):
                ax = axes[i, j]
                rows = [r for r in rt_rows if r["model"] == model and r["dtype"] == dname]
                for m in dict.fromkeys(r["method"] for r in rows):
                    pts = sorted((r["steps"], max(r[key], 1e-17)) for r in rows if r["method"] == m)
                    style = "-" if m.startswith("Rex") else "--"
                    ax.loglog(*zip(*pts, strict=True), style, marker="o", ms=3, label=m)
                ax.set_title(f"{model}, {dname}: {title} error")
                ax.set_xlabel("steps")
                ax.grid(True, which="both", alpha=0.3)
        axes[0, 1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        name = "roundtrip" if key == "rt_maxrel" else key
        fig.savefig(out / f"reconstruction_{name}{suffix}.png")
        plt.close(fig)
    if nfe_rows:
        fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
        for i, model in enumerate(models):
            ax = axes[0, i]
            rows = [r for r in nfe_rows if r["model"] == model]
            for m in dict.fromkeys(r["method"] for r in rows):
                pts = sorted(
                    (r["nfe"], max(r["sample_rel"], 1e-17)) for r in rows if r["method"] == m
                )
                style = "-" if m.startswith("Rex") else "--"
                ax.loglog(*zip(*pts, strict=True), style, marker="o", ms=3, label=m)
            ax.set_title(f"{model}, {rows[0]['dtype']}: sample error (rel. RMS) vs NFE")
            ax.set_xlabel("NFE")
            ax.grid(True, which="both", alpha=0.3)
        axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        fig.savefig(out / f"reconstruction_nfe{suffix}.png")
        plt.close(fig)


def main():
    global STEPS, DTYPES, BATCH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gmm,ddpm,sd")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--no-nfe", action="store_true", help="skip the equal-NFE study")
    parser.add_argument("--no-check", action="store_true", help="skip the start-up check")
    parser.add_argument("--batch", type=int, default=2, help="images per batch (U-Nets)")
    parser.add_argument(
        "--no-latent", action="store_true", help="skip the PF-ODE reference latent (costly)"
    )
    args = parser.parse_args()
    STEPS = tuple(int(n) for n in args.steps.split(","))
    DTYPES = tuple(jnp.dtype(d).type for d in args.dtypes.split(","))
    BATCH = args.batch
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []

    def log(msg=""):
        print(msg, flush=True)
        lines.append(msg)

    log(
        f"rexjax reconstruction study, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} "
        f"UTC, {jax.devices()[0].platform.upper()}, {os.cpu_count()} cores, jax {jax.__version__}"
    )
    log(f"grid: log-SNR uniform, t = {T_START} -> {T_END}; steps {STEPS}; Rex coupling 0.999")
    log(
        "SDE variants: not run here (the reverse-SDE Rex with Brownian replay is on branch "
        "`sde`; add it to rex_methods() when merged)."
    )
    if not args.no_check:
        check_against_public_api(log)
    rt_rows, nfe_rows = [], []
    suffix = "_" + args.models.replace(",", "_")
    for name in args.models.split(","):
        run_model(
            name,
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
    plot(rt_rows, nfe_rows, out, suffix)
    (out / f"reconstruction_log{suffix}.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
