r"""Boltzmann sampling with flow-matching models: which log q makes importance weights exact,
and does Rex change ESS or energy-W2 (the paper's Table 6 question) on GMM-40, many-well-32 and
DW-4?

Every configuration is a solver on a fixed grid from t=1 (noise) to t=1e-3, uniform in t, or
the accepted grid of an adaptive solve chosen once on a pilot batch of 256 and then replayed
exactly (diffrax's PID controller stops gradients through the step size, so only a frozen grid
has an exact Jacobian). For each we draw N samples and compute

- (A) log q from the accumulated exact-trace divergence (what Boltzmann generators use),
- (B) the exact log-density of the discrete map (forward-mode Jacobian through the solve),
- (C) the continuous-flow density at the same points (Dopri5, rtol = atol = 1e-7, backwards),

then Kish ESS, log Ẑ − log Z against the batch size, SNIS observables (GMM mode-weight TV,
many-well deep-well fractions), energy-W2 and sample W2 of the unweighted proposal, NFE and
wall time, the round trip of every Rex configuration, and the augmented Boltzmann generator
(`augmented.py`) for Rex configurations. float64 throughout; the committed models are loaded,
never trained here.

Run: `nice -n 10 python experiments/boltzmann/study.py --target gmm40` (one target per run;
`--quick` for a smoke test).
"""

import argparse
import sys
import time
from pathlib import Path


sys.path[:0] = [
    str(Path(__file__).parent),
    str(Path(__file__).parents[1]),
    str(Path(__file__).parents[2]),
]

import diffrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from augmented import augmented_log_weights, fit_aux_scale  # noqa: E402
from targets import TARGETS, ScaledTarget, load_model, w2_samples  # noqa: E402

import common  # noqa: E402
import rexjax as rx  # noqa: E402


T_END = 1e-3
SIZES = {  # N samples, N for (C), fixed step counts (sized for a shared 2-core machine)
    "gmm40": (2000, 500, (4, 16, 64)),
    "dw4": (500, 200, (4, 16, 64)),
    "manywell32": (128, 64, (4, 16, 64)),
}


def nfe_per_step(solver) -> int:
    if isinstance(solver, rx.Rex | rx.Princeps):
        return solver.evaluations_per_step()
    if isinstance(solver, diffrax.Euler):
        return 1
    tab = solver.tableau
    stages = len(tab.c) + 1
    return stages - 1 if getattr(solver, "_fsal", False) or tab.fsal else stages


def fixed_configs(steps, quick):
    """(name, variant, coupling, solver, grid): Euler three ways, EES(2,7) plain and Rex, RK4."""
    euler, ees = diffrax.Euler(), rx.EES27()
    out = []
    for n in steps:
        ts = np.linspace(1.0, T_END, n + 1)
        out.append(("Euler", "plain", None, euler, ts))
        if not quick:
            out.append(("Princeps Euler", "princeps", None, rx.Princeps(euler), ts))
        out.append(("Rex Euler", "rex", 0.999, rx.Rex(euler, coupling=0.999), ts))
        if not quick:
            out.append(("EES27", "plain", None, ees, ts))
            out.append(("Rex EES27", "rex", 0.999, rx.Rex(ees, coupling=0.999), ts))
    if not quick:
        out.append(("RK4", "plain", None, rx.RK4(), np.linspace(1.0, T_END, 9)))
    return out


def adaptive_configs(term, dim, key, quick):
    """Dopri5 at loose and tight tolerances and Rex(Dopri5) at three couplings, each on the
    grid an adaptive solve chose on a pilot batch (replayed exactly)."""
    pilot = jax.random.normal(key, (256, dim))
    model = term.model
    batched = rx.DiffusionTerm(
        lambda t, x, args: jax.vmap(lambda xi: model(t, xi, args))(x), term.schedule, "flow"
    )
    specs = [("Dopri5", None, 1e-5)]
    specs += [("Rex Dopri5", z, 1e-5) for z in (0.999, 0.001, 0.5)]
    specs += [("Dopri5", None, 1e-3)]
    if quick:
        specs = [("Dopri5", None, 1e-3)]
    out = []
    for name, zeta, tol in specs:
        solver = diffrax.Dopri5() if zeta is None else rx.Rex(diffrax.Dopri5(), coupling=zeta)
        pid = diffrax.PIDController(rtol=tol, atol=tol)
        ts = rx.adaptive_grid(batched, solver, pilot, 1.0, T_END, pid, dt0=-0.05)
        variant = "plain" if zeta is None else "rex"
        label = name if zeta is None else f"{name} z={zeta}"
        out.append((f"{label} tol {tol:.0e}", variant, zeta, solver, ts))
    return out


def timed(fn, *args):
    """Compile, then time one execution (seconds)."""
    compiled = jax.jit(fn).lower(*args).compile()
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, time.perf_counter() - start


def log_z_bias(log_w, log_z, sizes):
    """Mean over disjoint chunks of log Ẑ(chunk) − log Z, for each chunk size."""
    out = {}
    for n in sizes:
        if n > log_w.shape[0]:
            out[n] = float("nan")
            continue
        chunks = log_w[: (log_w.shape[0] // n) * n].reshape(-1, n)
        est = jax.vmap(rx.log_normaliser)(chunks)
        out[n] = float(jnp.mean(est)) - log_z
    return out


def snis_metric(target, xs, log_w):
    w = rx.self_normalised_weights(log_w)
    if target.name == "gmm40":
        return target.mode_tv(xs, w), target.mode_tv(xs)
    if target.name == "manywell32":
        return target.deep_well_error(xs, w), target.deep_well_error(xs)
    return float("nan"), float("nan")


def run_config(cfg, term, target, scaled, truth, keys, sizes, log):
    name, variant, zeta, solver, ts = cfg
    n, n_c, _ = sizes
    dim = target.dim
    zs = jax.random.normal(keys[0], (n, dim))
    ts = jnp.asarray(ts)
    num_steps = int(ts.shape[0] - 1)

    def b_fn(z):
        return jax.vmap(lambda z_: rx.discrete_log_prob(term, solver, z_, ts))(z)

    def a_fn(z):
        return jax.vmap(lambda z_: rx.sample_with_log_prob(term, solver, z_, 1.0, T_END, ts=ts))(z)

    pid = diffrax.PIDController(rtol=1e-7, atol=1e-7)

    def c_fn(x):
        return jax.vmap(
            lambda x_: rx.flow_log_prob(
                term, diffrax.Dopri5(), x_, T_END, 1.0, stepsize_controller=pid, dt0=0.01
            )
        )(x)

    (ys, log_qb), t_b = timed(b_fn, zs)
    (ys_a, log_qa), t_a = timed(a_fn, zs)
    log_qc = c_fn(ys[:n_c])
    # model units y = x / scale; the target density in those units is scaled.log_prob
    log_p = jax.vmap(scaled.log_prob)(ys)
    xs = ys * target.scale
    log_z = target.log_z if target.log_z is not None else float("nan")
    row = dict(
        target=target.name,
        method=name,
        variant=variant,
        zeta=zeta if zeta is not None else float("nan"),
        steps=num_steps,
        nfe=num_steps * nfe_per_step(solver),
        n=n,
        time_A_s=t_a,
        time_B_s=t_b,
        a_b_same_samples=float(jnp.max(jnp.abs(ys - ys_a))),
        gap_AB=float(jnp.mean(jnp.abs(log_qa - log_qb))),
        gap_BC=float(jnp.mean(jnp.abs(log_qb[:n_c] - log_qc))),
        gap_AC=float(jnp.mean(jnp.abs(log_qa[:n_c] - log_qc))),
    )
    for kind, lq, m in (("A", log_qa, n), ("B", log_qb, n), ("C", log_qc, n_c)):
        log_w = rx.log_importance_weights(log_p[:m], lq)
        row[f"ess_{kind}"] = float(rx.kish_ess(log_w))
        biases = log_z_bias(log_w, log_z, (16, 64, 256, m))
        row[f"logz_bias_{kind}_n16"] = biases[16]
        row[f"logz_bias_{kind}_n256"] = biases[256]
        row[f"logz_bias_{kind}_all"] = biases[m]
        row[f"snis_err_{kind}"] = snis_metric(target, xs[:m], log_w)[0]
    row["proposal_err"] = snis_metric(target, xs, jnp.zeros(n))[1]
    e_model = jax.vmap(getattr(target, "dw_energy", target.energy))(xs)
    e_true = jax.vmap(getattr(target, "dw_energy", target.energy))(truth[:n])
    row["energy_w2"] = float(rx.w2_1d(e_model, e_true))
    m_w2 = min(n, 1000)
    row["sample_w2"] = w2_samples(xs[:m_w2], truth[:m_w2])
    row["roundtrip"] = float("nan")
    row["ess_aug"] = float("nan")
    row["logz_bias_aug"] = float("nan")
    if variant == "rex":
        sub = zs[:128]
        full = jax.vmap(lambda z_: rx.sample(term, solver, z_, ts, full_state=True))(sub)
        back = jax.vmap(lambda s_: rx.invert(term, solver, s_, ts))(full)
        row["roundtrip"] = float(jnp.max(jnp.abs(back.y - sub)) / jnp.max(jnp.abs(sub)))
        aux_scale = fit_aux_scale(term, solver, ts, keys[1], dim, hat_scale=0.1)
        log_w_aug, _ = augmented_log_weights(
            term, solver, ts, keys[2], n, dim, scaled.log_prob, 0.1, aux_scale
        )
        row["ess_aug"] = float(rx.kish_ess(log_w_aug))
        row["logz_bias_aug"] = float(rx.log_normaliser(log_w_aug)) - log_z
    log(
        f"{name:26s} N={num_steps:3d} nfe={row['nfe']:4d} ESS A/B/C {row['ess_A']:.3f}/"
        f"{row['ess_B']:.3f}/{row['ess_C']:.3f} logZ bias A/B {row['logz_bias_A_all']:+.3f}/"
        f"{row['logz_bias_B_all']:+.3f} EW2 {row['energy_w2']:.3f} W2 {row['sample_w2']:.3f} "
        f"rt {row['roundtrip']:.1e} ESS aug {row['ess_aug']:.3f}"
    )
    return row


def plots(rows, target, out):
    plt = common.pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    known_log_z = any(np.isfinite(r["logz_bias_B_all"]) for r in rows)
    fixed = [r for r in rows if "tol" not in r["method"]]
    for method in dict.fromkeys(r["method"] for r in fixed):
        rs = sorted((r for r in fixed if r["method"] == method), key=lambda r: r["nfe"])
        nfe = [r["nfe"] for r in rs]
        (line,) = axes[0].plot(nfe, [r["ess_B"] for r in rs], "-o", ms=3, label=method)
        axes[0].plot(nfe, [r["ess_A"] for r in rs], ":", color=line.get_color())
        axes[1].plot(nfe, [r["energy_w2"] for r in rs], "-o", ms=3, color=line.get_color())
        if known_log_z:
            axes[2].plot(nfe, [abs(r["logz_bias_A_all"]) for r in rs], ":", color=line.get_color())
            axes[2].plot(nfe, [abs(r["logz_bias_B_all"]) for r in rs], "-o", ms=3,
                         color=line.get_color())  # fmt: skip
        else:
            axes[2].plot(nfe, [r["sample_w2"] for r in rs], "-o", ms=3, color=line.get_color())
    if known_log_z:
        n_all = rows[0]["n"]
        for r in rows:  # does the log Z bias vanish as the number of samples grows?
            axes[3].plot([16, 256, n_all],
                         [abs(r[f"logz_bias_B_{k}"]) for k in ("n16", "n256", "all")],
                         "-o", ms=3, label=f"{r['method']} ({r['steps']})")  # fmt: skip
        axes[3].set(xscale="log", yscale="log", xlabel="samples N",
                    ylabel="|log Ẑ − log Z| (B)",
                    title="bias vs N: 1/N (log-mean-exp) or a floor (wrong log q)")  # fmt: skip
        axes[3].legend(fontsize=5, ncol=2)
    else:  # DW-4: no reference log Z, so no bias panels
        axes[2].set(xscale="log", xlabel="NFE", ylabel="sample W2", title="sample W2 (no log Z)")
        axes[3].axis("off")
        axes[3].text(0.5, 0.5, f"{target}: log Z unknown", ha="center", va="center")
    for r in rows:
        if "tol" in r["method"]:
            axes[0].plot(r["nfe"], r["ess_B"], "k*", ms=7)
            axes[1].plot(r["nfe"], r["energy_w2"], "k*", ms=7)
    axes[0].set(xscale="log", xlabel="NFE", ylabel="Kish ESS / N",
                title=f"{target}: ESS, (B) solid, (A) dotted; * adaptive")  # fmt: skip
    axes[1].set(xscale="log", yscale="log", xlabel="NFE", ylabel="energy-W2 (kT)")
    if known_log_z:
        axes[2].set(xscale="log", yscale="log", xlabel="NFE", ylabel="|log Ẑ − log Z|",
                    title="(B) solid, (A) dotted")  # fmt: skip
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / f"boltzmann_{target}.png", dpi=120)
    plt.close(fig)


_RESULTS_TITLE = (
    "Results (log Ẑ − log Z: mean over disjoint chunks of 16 and 256 samples, and over all N; "
    "a bias that shrinks with the chunk size is the O(1/N) bias of log-mean-exp, one that stays "
    "is a wrong log q)"
)


def write_results(rows, out, stem, log):
    common.write_csv(rows, out / f"{stem}.csv")
    cols = ["method", "steps", "nfe", "ess_A", "ess_B", "ess_C", "logz_bias_A_all",
            "logz_bias_B_n16", "logz_bias_B_n256", "logz_bias_B_all", "snis_err_B", "energy_w2",
            "sample_w2", "roundtrip", "ess_aug", "logz_bias_aug", "time_B_s"]  # fmt: skip
    table = common.markdown_table([[r[c] for c in cols] for r in rows], cols, ".3g")
    common.write_markdown(
        out / f"{stem}.md",
        f"Boltzmann study: {rows[0]['target']}",
        [("Run", log.lines[0]), (_RESULTS_TITLE, table)],
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=list(TARGETS), required=True)
    parser.add_argument("--quick", action="store_true", help="a small smoke test")
    parser.add_argument("--out", default=None)
    parser.add_argument("--model", default=None, help="weights file (default: the committed)")
    parser.add_argument("--report", action="store_true", help="only redraw the plot from the CSV")
    args = parser.parse_args(argv)
    if args.report:
        out = common.out_dir(args.out)
        plots(common.read_csv(out / f"boltzmann_{args.target}.csv"), args.target, out)
        return
    jax.config.update("jax_enable_x64", True)
    out = common.out_dir(args.out)
    log = common.Log()
    log(common.header(f"Boltzmann study, {args.target}"))
    target = TARGETS[args.target]()
    scaled = ScaledTarget(target)
    sizes = SIZES[args.target]
    if args.quick:
        sizes = (32, 8, (4,))
    model = load_model(target, path=args.model)
    term = rx.DiffusionTerm(model, rx.FlowMatchingSchedule(), "flow")
    truth = target.sample(common.key(100), max(sizes[0], 1000))
    # The paper's comparison (adaptive Dopri5 vs Rex(Dopri5)) first; results are written after
    # every configuration, so an interrupted run keeps what it measured.
    configs = adaptive_configs(term, target.dim, common.key(7), args.quick)
    configs += fixed_configs(sizes[2], args.quick)
    stem = f"boltzmann_{args.target}" + ("_quick" if args.quick else "")
    rows = []
    for i, cfg in enumerate(common.progress(configs, desc=args.target)):
        keys = jax.random.split(common.key(1000 + i), 3)
        rows.append(run_config(cfg, term, target, scaled, truth, keys, sizes, log))
        write_results(rows, out, stem, log)
    if not args.quick:
        plots(rows, args.target, out)
    log.save(out / f"{stem}_log.txt")


if __name__ == "__main__":
    main()
