"""`python -m rexjax solvers`: the solver-accuracy table on the analytic Gaussian mixture.

Samples the built-in analytic Gaussian-mixture model (exact noise prediction, no downloads)
with exponential solvers (Princeps), their reversible Rex versions, near-reversible inversion
and a plain diffrax solver, and prints per solver: model evaluations (NFE), the error against
a high-accuracy reference, Rex's error relative to its own Princeps base, the coupling gap
||x - x^||/||x|| (above `rexjax.GAP_WARNING` the pair has separated: do not trust the sample),
the inversion round trip (data -> noise -> data) and the wall time of the jitted sampler.
"""

import argparse
import sys
import time
import warnings


def _progress(done: int, total: int, label: str) -> None:
    width = 28
    filled = width * done // total
    bar = "#" * filled + "-" * (width - filled)
    sys.stderr.write(f"\r[{bar}] {done}/{total} {label:<36}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _solvers(show_all: bool):
    """(solver, its Princeps base or None) pairs: the recommended configurations, and with
    `show_all` the classic bases at the paper's coupling (flagged by their gap)."""
    import diffrax

    import rexjax as rx

    pairs = []
    for prediction in ("data", "noise"):
        default = rx.Rex(prediction=prediction)
        pairs.append((rx.Princeps(default.base, prediction), None))
        pairs.append((default, rx.Princeps(default.base, prediction)))
        pairs.append((rx.NearReversible(rx.EES27(), prediction), None))
    if show_all:
        for base in (diffrax.Euler(), diffrax.Midpoint(), rx.RK4(), diffrax.Tsit5(), rx.EES25()):
            for prediction in ("data", "noise"):
                princeps = rx.Princeps(base, prediction)
                pairs.append((princeps, None))
                pairs.append((rx.Rex(base, prediction, coupling=0.999), princeps))
    pairs.append((diffrax.Tsit5(), None))
    return pairs


def _name(solver) -> str:
    import rexjax as rx

    if isinstance(solver, rx.Rex):
        base = type(solver.base).__name__
        coupling = solver.coupling
        coupling = coupling if isinstance(coupling, str) else f"{coupling:g}"
        return f"Rex({base}, {solver.prediction}, {coupling})"
    if isinstance(solver, rx.Princeps | rx.NearReversible):
        return f"{type(solver).__name__}({type(solver.base).__name__}, {solver.prediction})"
    return f"diffrax.{type(solver).__name__} (plain)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="rexjax solvers", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25, help="steps on the log-SNR grid")
    parser.add_argument("--batch", type=int, default=256, help="number of samples")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--t-end", type=float, default=1e-3, help="final diffusion time")
    parser.add_argument(
        "--all",
        action="store_true",
        help="also Euler, Midpoint, RK4, Tsit5 and EES25 bases at coupling 0.999",
    )
    opts = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)  # the reference solution is computed in float64
    import diffrax
    import jax.numpy as jnp

    import rexjax as rx

    dtype = jnp.dtype(opts.dtype)
    schedule = rx.VPSchedule.linear()
    model = rx.GaussianMixture.default(schedule, prediction="noise")
    term = model.term()
    ts = rx.log_snr_grid(schedule, 1.0, opts.t_end, opts.steps)
    noise = jax.random.normal(jax.random.key(0), (opts.batch, model.dim), dtype=jnp.float64)

    reference = diffrax.diffeqsolve(
        term,
        diffrax.Dopri8(),
        t0=1.0,
        t1=opts.t_end,
        dt0=-1e-3,
        y0=noise,
        stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12),
        max_steps=100_000,
    ).ys[-1]
    noise = noise.astype(dtype)
    ts_run = ts.astype(dtype)

    def rel(a, b):
        return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))

    pairs = _solvers(opts.all)
    # The --all rows include noise prediction at coupling 0.999, which rexjax.sample / invert
    # warn about (rexjax.CouplingWarning); here the gap column flags them instead.
    warnings.simplefilter("ignore", rx.CouplingWarning)
    errors, rows = {}, []
    for i, (solver, princeps) in enumerate(pairs):
        _progress(i, len(pairs), _name(solver))
        run = jax.jit(lambda y, ts, solver=solver: rx.sample(term, solver, y, ts))
        sample = jax.block_until_ready(run(noise, ts_run))  # compile
        start = time.perf_counter()
        sample = jax.block_until_ready(run(noise, ts_run))
        elapsed = time.perf_counter() - start
        error = rel(sample.astype(jnp.float64), reference)
        errors[_name(solver)] = error
        ratio = gap = round_trip = "-"
        if princeps is not None:
            ratio = f"{error / errors[_name(princeps)]:.2f}x"
        if isinstance(solver, rx.Rex):
            worst = float(jnp.max(rx.trajectory_gap(term, solver, noise, ts_run)[1]))
            flag = " !" if worst > rx.GAP_WARNING else ""
            gap = f"{worst:.1e}{flag}"
        if isinstance(solver, rx.AbstractInvertibleSolver):
            latent = rx.invert(term, solver, sample, ts_run)
            again = jax.jit(lambda y, ts, solver=solver: rx.sample(term, solver, y, ts))(
                latent, ts_run
            )
            miss = float(jnp.max(jnp.abs(again - sample)) / jnp.max(jnp.abs(sample)))
            exact = isinstance(solver, rx.AbstractReversibleSolver)
            round_trip = f"{miss:.1e}" + ("" if exact else " (approx.)")
        nfe = solver.evaluations_per_step() if hasattr(solver, "evaluations_per_step") else 6
        rows.append((_name(solver), nfe * opts.steps, error, ratio, gap, round_trip, elapsed))
    _progress(len(pairs), len(pairs), "done")

    print(
        f"\nGaussian mixture (6 components, d={model.dim}), VP linear schedule, "
        f"{opts.batch} samples, t: 1 -> {opts.t_end}, {opts.steps} log-SNR-uniform steps, "
        f"{opts.dtype}.\nerror: ||x - x_ref|| / ||x_ref|| against Dopri8 (rtol 1e-12); "
        "vs base: Rex error / its Princeps error; gap: max over samples and steps of "
        f"||x - x^|| / ||x|| in Rex's coupled pair ('!' above {rx.GAP_WARNING:g}: the pair "
        "has separated, do not trust the sample); round trip: sample -> invert -> sample, "
        "max |x' - x| / max |x|.\n"
    )
    header = f"{'solver':<34} {'NFE':>5} {'error':>9} {'vs base':>8} {'gap':>10}"
    print(header + f" {'round trip':>18} {'time':>9}")
    for name, nfe, error, ratio, gap, round_trip, elapsed in rows:
        print(
            f"{name:<34} {nfe:>5} {error:>9.2e} {ratio:>8} {gap:>10} {round_trip:>18} "
            f"{elapsed * 1e3:>7.1f}ms"
        )
    best = min(rows, key=lambda r: r[2])
    print(f"\nmost accurate: {best[0]} (error {best[2]:.1e}); all times exclude compilation.")
    if not opts.all:
        print("`python -m rexjax solvers --all` adds the classic bases at coupling 0.999.")
    sys.stdout.flush()
