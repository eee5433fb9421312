"""Cost of the replayable Brownian path per model evaluation: the grid path
(`rexjax.GridBrownianPath`, the default on fixed grids: O(1) per step) against the virtual
Brownian tree (`tol=`: O(log(span/tol)) per query), measured side by side in one run.

For each state shape: one model evaluation, one path query (W and H of one step; a Rex SDE
step makes one, reused negated by its reverse substep) for each path, and the wall time per
sampling step of Rex(EM) and Rex(ShARK) on the ODE, the SDE with the grid path and the SDE
with the tree. Best of 5 timings after compilation. The model is an MLP denoiser on image-
shaped states; a real UNet costs far more per evaluation, so the Brownian overhead relative to
it is smaller than here (`experiments/gpu_suite.py` measures it with the SD 1.5 UNet).

Run: `python experiments/bench_brownian.py` (`--quick`: one small shape). Writes
`experiments/results/brownian_bench.{csv,md,png}`.
"""

import argparse
import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import rexjax as rx
from common import (
    Log,
    header,
    key,
    markdown_table,
    out_dir,
    progress,
    pyplot,
    write_csv,
    write_markdown,
)


def best(fn, *args, repeats=5):
    """The fastest of `repeats` calls after a compiling one (seconds)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def make_model(dim, hidden, k):
    k1, k2 = jax.random.split(k)
    w1 = jax.random.normal(k1, (dim, hidden)) / np.sqrt(dim)
    w2 = jax.random.normal(k2, (hidden, dim)) / np.sqrt(hidden)

    def model(t, x, args):
        flat = x.reshape(x.shape[0], -1)
        h = jnp.tanh(flat @ w1 + t)
        return (flat + h @ w2).reshape(x.shape)

    return model


def tree_tol(schedule, ts):
    s = rx.LawsonVariables(schedule, "data", stochastic=True).time(ts)
    return 0.5 * float(jnp.min(jnp.abs(jnp.diff(s))))


def bench(schedule, ts, shape, hidden):
    """One row per state shape: times of a model evaluation, path queries and steps."""
    n_steps = ts.shape[0] - 1
    model = make_model(int(np.prod(shape[1:])), hidden, key(0))
    term = rx.DiffusionTerm(model, schedule, "noise")
    y = jax.random.normal(key(1), shape, jnp.float32)
    tol = tree_tol(schedule, ts)
    row = dict(shape="x".join(map(str, shape)), hidden=hidden)
    row["model_ms"] = 1e3 * best(jax.jit(lambda x: model(0.5, x, None)), y)
    v = rx.LawsonVariables(schedule, "data", stochastic=True)
    s0, s1 = v.time(ts[10]), v.time(ts[11])
    query = eqx.filter_jit(lambda p, a, b: p.increment(a, b))
    for name, path_tol in (("grid", None), ("tree", tol)):
        sde = rx.reverse_sde(term, rx.Rex(diffrax.Euler(), "data"), key(2), ts, y, tol=path_tol)
        row[f"{name}_query_ms"] = 1e3 * best(query, sde.path, s0, s1)
        row[f"{name}_query_per_eval"] = row[f"{name}_query_ms"] / row["model_ms"]
    for base_name, base in (("EM", diffrax.Euler()), ("ShARK", diffrax.ShARK())):
        solver = rx.Rex(base, "data")
        ode = jax.jit(lambda x, s=solver: rx.sample(term, s, x, ts))
        row[f"{base_name}_ode_step_ms"] = 1e3 * best(ode, y) / n_steps
        for name, path_tol in (("grid", None), ("tree", tol)):
            fn = jax.jit(lambda x, k, s=solver, p=path_tol: rx.sample(term, s, x, ts, key=k, tol=p))
            step = 1e3 * best(fn, y, key(3)) / n_steps
            row[f"{base_name}_sde_{name}_step_ms"] = step
            row[f"{base_name}_sde_{name}_over_ode"] = step / row[f"{base_name}_ode_step_ms"]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small shape, 20 steps")
    parser.add_argument("--out", default=None)
    cli = parser.parse_args()
    out, log = out_dir(cli.out), Log()
    schedule = rx.VPSchedule.linear()
    n_steps = 20 if cli.quick else 50
    ts = rx.log_snr_grid(schedule, 1.0, 1e-3, n_steps).astype(jnp.float32)
    cases = [((2, 3, 8, 8), 64)] if cli.quick else [((4, 3, 32, 32), 512), ((16, 3, 64, 64), 1024)]
    title = header("bench_brownian")
    log(f"# {title}; float32, Rex data prediction, {n_steps} log-SNR steps")
    rows = [bench(schedule, ts, shape, hidden) for shape, hidden in progress(cases, "shapes")]
    write_csv(rows, out / "brownian_bench.csv")
    headers = [
        "state",
        "model eval ms",
        "grid query ms",
        "tree query ms",
        "grid / eval",
        "tree / eval",
        "EM SDE/ODE grid",
        "EM SDE/ODE tree",
        "ShARK SDE/ODE grid",
        "ShARK SDE/ODE tree",
    ]
    table = markdown_table(
        [
            [
                r["shape"],
                r["model_ms"],
                r["grid_query_ms"],
                r["tree_query_ms"],
                r["grid_query_per_eval"],
                r["tree_query_per_eval"],
                r["EM_sde_grid_over_ode"],
                r["EM_sde_tree_over_ode"],
                r["ShARK_sde_grid_over_ode"],
                r["ShARK_sde_tree_over_ode"],
            ]
            for r in rows
        ],
        headers,
        spec=".3g",
    )
    log(table)
    notes = (
        "A query is W and H of one step (the reverse substep reuses them negated). A Rex ODE "
        "step costs 2 model evaluations (EM base) or 4 (ShARK, 2 stages); the SDE adds one query "
        "a step. `grid / eval` is the Brownian cost per model evaluation of the default path; "
        "`tree / eval` that of the tree (`tol=`), whose depth is log2(span/tol) ~ 30 levels "
        "here. Times are the best of 5 on a shared CPU."
    )
    write_markdown(out / "brownian_bench.md", title, [("Brownian cost", table), ("Notes", notes)])
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["grid_query_per_eval"] for r in rows], 0.4, label="grid path")
        ax.bar(x + 0.2, [r["tree_query_per_eval"] for r in rows], 0.4, label="Brownian tree")
        ax.set_xticks(x, [r["shape"] for r in rows])
        ax.set_yscale("log")
        ax.set_ylabel("query time / model evaluation")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "brownian_bench.png", dpi=120)
    else:
        log("matplotlib not installed: no plot")


if __name__ == "__main__":
    main()
