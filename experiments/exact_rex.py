"""ExactRex (bit-exact inversion) vs Rex at coupling 1: sample accuracy, round trips next to
the baselines, speed.

1. Accuracy: relative sample error (max |x - x_ref| / max |x_ref|) on the Gaussian mixture
   against a Dopri8 reference (float64, tol 1e-12), log-SNR grids of 10-100 steps, data
   prediction, bases EES(2,7) and RK4, float64 and float32 states. ExactRex's claim: within
   1.5x of Rex(base, coupling=1).
2. Round trips: max |sample(invert(x)) - x| / max |x| in float32 at 50 steps on the mixture,
   a random-weight UNet2DModel (Flax port) and the trained digits model
   (`rexjax.models.pretrained`, 16 held-out digits under their own class) for ExactRex, Rex,
   EDICT, BDIA and BELM.
3. Speed: wall time of one compiled sampling run (ExactRex / Rex at the same base).

Grids of every length are padded with zero-length steps (skipped) so that each solver and
dtype compiles once. `--quick` is the small smoke run of the test suite; `--parts` runs some
of the three parts and keeps the other parts' committed CSVs.
"""

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import common
import rexjax as rx
from rexjax.baselines import BDIA, BELM, EDICT


jax.config.update("jax_enable_x64", True)

SCHEDULE = rx.VPSchedule.linear()
MIXTURE = rx.GaussianMixture.default(SCHEDULE)
T_START, T_END = 1.0, 1e-3


@eqx.filter_jit
def _forward(term, solver, y, state, ts, args=None):
    def body(carry, times):
        def step(c):
            y, s = c
            y, _, _, s, _ = solver.step(term, times[0], times[1], y, args, s, False)
            return y, s

        return jax.lax.cond(times[0] == times[1], lambda c: c, step, carry), None

    return jax.lax.scan(body, (y, state), (ts[:-1], ts[1:]))[0]


@eqx.filter_jit
def _backward(term, solver, y, state, ts, args=None):
    def body(carry, times):
        def back(c):
            y, s = c
            y, _, s, _ = solver.backward_step(term, times[0], times[1], y, args, None, s, False)
            return y, s

        return jax.lax.cond(times[0] == times[1], lambda c: c, back, carry), None

    return jax.lax.scan(body, (y, state), (ts[:-1], ts[1:]), reverse=True)[0]


def padded_grid(schedule, n, length, dtype):
    ts = rx.log_snr_grid(schedule, T_START, T_END, n)
    return jnp.concatenate([ts, jnp.full(length + 1 - ts.shape[0], ts[-1])]).astype(dtype)


def sample(term, solver, z, ts, args=None):
    """Noise to data along a padded grid (the scale of ExactRex from the grid's end points)."""
    state = solver.init(term, ts[0], ts[-1], z, args)
    return _forward(term, solver, z, state, ts, args)[0]


def round_trip(term, solver, x0, ts, args=None):
    """max |sample(invert(x0)) - x0| / max |x0| with the solver's own inverse (for ExactRex,
    `x0` is first rounded onto its grid: the inputs its guarantee is about)."""
    if isinstance(solver, rx.ExactRex):
        x0 = solver.round_to_grid(term, x0, ts[-1], ts)
    state = solver.init(term, ts[-1], ts[0], x0, args)
    y, s = _backward(term, solver, x0, state, ts, args)
    back = _forward(term, solver, y, s, ts, args)[0]
    return float(jnp.max(jnp.abs(back - x0)) / jnp.max(jnp.abs(x0)))


def accuracy(steps, bases, dtypes, log):
    term = MIXTURE.term()
    z64 = jax.random.normal(common.key(1), (64, MIXTURE.dim))
    ts_ref = rx.log_snr_grid(SCHEDULE, T_START, T_END, 2)
    import diffrax

    ref = diffrax.diffeqsolve(
        term,
        diffrax.Dopri8(),
        ts_ref[0],
        ts_ref[-1],
        dt0=-1e-3,
        y0=z64,
        stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12),
        max_steps=100_000,
    ).ys[-1]
    rows, length = [], max(steps)
    jobs = [(b, d) for b in bases for d in dtypes]
    for base_name, dtype in common.progress(jobs, "accuracy"):
        base = {"EES27": rx.EES27(), "RK4": rx.RK4()}[base_name]
        z = z64.astype(dtype)
        for n in steps:
            ts = padded_grid(SCHEDULE, n, length, dtype)
            err = {}
            for name, solver in (
                ("Rex", rx.Rex(base, "data", 1.0)),
                ("ExactRex", rx.ExactRex(base)),
            ):
                x = sample(term, solver, z, ts)
                err[name] = float(jnp.max(jnp.abs(x - ref)) / jnp.max(jnp.abs(ref)))
            row = dict(
                base=base_name,
                dtype=jnp.dtype(dtype).name,
                steps=n,
                rex_error=err["Rex"],
                exact_error=err["ExactRex"],
                ratio=err["ExactRex"] / err["Rex"],
            )
            log(f"  {row}")
            rows.append(row)
    return rows


def tiny_unet():
    import rexjax.models as rm

    config = {
        **rm.DDPM_CIFAR10_UNET_CONFIG,
        "block_out_channels": (16, 32),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "sample_size": 16,
    }
    unet = rm.random_unet(config, common.key(0))
    return rm.diffusion_term(unet, rm.DDPM_SCHEDULER_CONFIG)


def round_trip_solvers(x_max=4.0):
    return {
        "ExactRex EES27 (data)": rx.ExactRex(rx.EES27(), x_max=x_max),
        "Rex EES27 (data, coupling 1)": rx.Rex(rx.EES27(), "data", 1.0),
        "Rex EES27 (data, coupling 0.999)": rx.Rex(rx.EES27(), "data", 0.999),
        "EDICT p=0.93": EDICT(0.93),
        "BDIA g=1": BDIA(1.0),
        "O-BELM": BELM(),
    }


def round_trips(models, steps, log, methods=None):
    rows = []
    for model in models:
        # A random network's ODE is strongly expanding: its states leave |x| <= 8, the range
        # of ExactRex's default x_max (refused, never wrapped); 256 costs 6 of the 41 bits.
        solvers = round_trip_solvers(256.0 if model == "random UNet" else 4.0)
        if methods is not None:
            solvers = {name: solvers[name] for name in methods}
        args = None
        if model == "mixture":
            term, schedule = MIXTURE.term(), SCHEDULE
            x0 = MIXTURE.sample_data(common.key(2), 64, dtype=jnp.float32)
        elif model == "digits":
            from rexjax.models import pretrained

            term = pretrained.digits_term(dtype=jnp.float32)
            schedule = term.schedule
            images, labels = pretrained.digits_test_split()
            x0, args = jnp.asarray(images[:16]), jnp.asarray(labels[:16])
        else:
            term = tiny_unet()
            schedule = term.schedule
            x0 = jnp.clip(jax.random.normal(common.key(2), (2, 3, 16, 16)), -1, 1)
            x0 = x0.astype(jnp.float32)
        ts = padded_grid(schedule, steps, steps, jnp.float32)
        for name, solver in common.progress(list(solvers.items()), f"round trips ({model})"):
            err = round_trip(term, solver, x0, ts, args)
            rows.append(dict(model=model, method=name, steps=steps, dtype="float32", error=err))
            log(f"  {rows[-1]}")
        # A float input off the grid comes back rounded onto it: within half a grid step.
        exact = solvers["ExactRex EES27 (data)"]
        off = float(jnp.max(jnp.abs(exact.round_to_grid(term, x0, ts[-1], ts) - x0)))
        half = 0.5 * float(exact.grid_step(term, ts[-1], ts, jnp.float32))
        name = "ExactRex, float input off the grid (half grid step)"
        err = off / float(jnp.max(jnp.abs(x0)))
        rows.append(
            dict(model=model, method=f"{name}: {half:.1e}", steps=steps, dtype="float32", error=err)
        )
        log(f"  {rows[-1]}")
    return rows


def speed(log, quick=False):
    """Best-of-3 wall time of one compiled sampling run, Rex (coupling 1) against ExactRex,
    EES(2,7): on the mixture (a cheap model: the fixed-point bookkeeping shows) and on the
    trained digits UNet (a real network). `quick`: the mixture at 10 steps, one timing."""
    cases = [("mixture", MIXTURE.term(), SCHEDULE, 10 if quick else 50, (256, MIXTURE.dim), None)]
    if not quick:
        from rexjax.models import pretrained

        digits = pretrained.digits_term(dtype=jnp.float32)
        shape = (16, *pretrained.IMAGE_SHAPE)
        cases.append(("digits", digits, digits.schedule, 10, shape, jnp.arange(16) % 10))
    repeats = 1 if quick else 3
    rows = []
    for model, term, schedule, steps, shape, args in cases:
        z = jax.random.normal(common.key(3), shape, jnp.float32)
        ts = padded_grid(schedule, steps, steps, jnp.float32)
        times = {}
        for name, solver in (("Rex", rx.Rex(rx.EES27(), "data", 1.0)), ("ExactRex", rx.ExactRex())):
            jax.block_until_ready(sample(term, solver, z, ts, args))  # compile
            best = np.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                jax.block_until_ready(sample(term, solver, z, ts, args))
                best = min(best, time.perf_counter() - t0)
            times[name] = best
        row = dict(
            model=model,
            steps=steps,
            batch=shape[0],
            rex_s=times["Rex"],
            exact_s=times["ExactRex"],
            ratio=times["ExactRex"] / times["Rex"],
        )
        log(f"  speed {row}")
        rows.append(row)
    return rows


def write_results(out, title, acc, trips, spd):
    """The CSVs, the markdown tables and the plot of one run."""
    common.write_csv(acc, out / "exact_rex_accuracy.csv")
    common.write_csv(trips, out / "exact_rex_round_trips.csv")
    if spd:
        common.write_csv(spd, out / "exact_rex_speed.csv")
    acc_table = common.markdown_table(
        [
            [r["base"], r["dtype"], r["steps"], r["rex_error"], r["exact_error"], r["ratio"]]
            for r in acc
        ],
        ["base", "dtype", "steps", "Rex (coupling 1)", "ExactRex", "ratio"],
    )
    trip_table = common.markdown_table(
        [[r["model"], r["method"], r["steps"], r["error"]] for r in trips],
        ["model", "method", "steps", "float32 round trip"],
    )
    speed_table = common.markdown_table(
        [[r["model"], r["steps"], r["batch"], r["rex_s"], r["exact_s"], r["ratio"]] for r in spd],
        ["model", "steps", "batch", "Rex s", "ExactRex s", "ratio"],
        spec=".3g",
    )
    common.write_markdown(
        out / "exact_rex.md",
        title,
        [
            ("Sample error vs Dopri8 (mixture, data prediction)", acc_table),
            ("Round trips, max |sample(invert(x)) - x| / max |x|", trip_table),
            ("Speed (one compiled sampling run, float32, best of 3)", speed_table),
        ],
    )
    plt = common.pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6, 4))
        for base in sorted({r["base"] for r in acc}):
            for dtype in sorted({r["dtype"] for r in acc}):
                rs = [r for r in acc if r["base"] == base and r["dtype"] == dtype]
                n = [r["steps"] for r in rs]
                (line,) = ax.loglog(
                    n, [r["rex_error"] for r in rs], "o-", label=f"Rex {base} {dtype}"
                )
                ax.loglog(
                    n,
                    [r["exact_error"] for r in rs],
                    "x--",
                    color=line.get_color(),
                    label=f"ExactRex {base} {dtype}",
                )
        ax.set_xlabel("steps")
        ax.set_ylabel("relative sample error")
        ax.legend(fontsize=7)
        ax.set_title("ExactRex vs Rex (coupling 1), mixture")
        fig.tight_layout()
        fig.savefig(out / "exact_rex.png", dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--out", default=None, help="results folder")
    parser.add_argument(
        "--parts", default="accuracy,round_trips,speed", help="which parts to run (full runs)"
    )
    args = parser.parse_args()
    out = common.out_dir(args.out)
    log = common.Log()
    log(common.header("exact_rex" + (" (quick)" if args.quick else "")))
    parts = args.parts.split(",")
    if args.quick:
        acc = accuracy([10], ["EES27"], [jnp.float64], log)
        trips = round_trips(["mixture"], 10, log, ["ExactRex EES27 (data)", "EDICT p=0.93"])
        spd = speed(log, quick=True)
    else:
        kept = {p: out / f"exact_rex_{p}.csv" for p in ("accuracy", "round_trips", "speed")}
        acc = (
            accuracy([10, 25, 50, 100], ["EES27", "RK4"], [jnp.float64, jnp.float32], log)
            if "accuracy" in parts
            else common.read_csv(kept["accuracy"])
        )
        trips = (
            round_trips(["mixture", "random UNet", "digits"], 50, log)
            if "round_trips" in parts
            else common.read_csv(kept["round_trips"])
        )
        spd = speed(log) if "speed" in parts else common.read_csv(kept["speed"])
    write_results(out, log.lines[0], acc, trips, spd)
    log.save(out / "exact_rex.log")


if __name__ == "__main__":
    main()
