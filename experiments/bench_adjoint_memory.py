r"""Memory and time of the gradient through Rex sampling versus the number of steps, for
`rexjax.ReversibleAdjoint`, `diffrax.RecursiveCheckpointAdjoint` and `diffrax.DirectAdjoint`.

Problem: a batch of 16 samples in 64 dimensions (state 16x64 float32), a noise-prediction MLP
(65 -> 128 -> 128 -> 64, SiLU, ~33k parameters) with `rexjax.VPSchedule.linear()`, sampled by
`rexjax.Rex(diffrax.Euler(), "data")` with `rexjax.sample` on a log-SNR grid from t=1 to 1e-3;
the loss is the mean square of the samples and the gradient is taken w.r.t. the MLP's
parameters and the initial noise. For each number of steps N and each adjoint, in one run:

- `temp`: compiled temporary memory of the jitted gradient
  (`jax.jit(grad).lower(...).compile().memory_analysis().temp_size_in_bytes`);
- `peak`: temp + argument + output bytes (the compiled working set);
- `compile`: lowering + compilation time; `grad`: the fastest of the repeated calls after a
  warm-up, the adjoints' calls interleaved (the minimum is the least disturbed by other jobs
  on a shared machine); ratios to `RecursiveCheckpointAdjoint` side by side.

Run: `python experiments/bench_adjoint_memory.py` (a few minutes on 2 CPU cores; `--steps`
to change the list, `--no-direct` to skip DirectAdjoint, `--quick` for 10 and 30 steps).
Writes `experiments/results/adjoint_memory.{csv,md,png}`.
"""

import argparse
import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

import rexjax as rx
from common import Log, header, markdown_table, out_dir, progress, pyplot, write_csv, write_markdown


BATCH, DIM = 16, 64


class NoiseMLP(eqx.Module):
    mlp: eqx.nn.MLP

    def __init__(self, key):
        self.mlp = eqx.nn.MLP(DIM + 1, DIM, 128, 2, activation=jax.nn.silu, key=key)

    def __call__(self, t, x, args):
        tx = jnp.concatenate([x, jnp.full((x.shape[0], 1), t, x.dtype)], axis=-1)
        return jax.vmap(self.mlp)(tx)


def compile_grad(adjoint, num_steps):
    """The compiled gradient for one adjoint and number of steps, its memory and compile time."""
    schedule = rx.VPSchedule.linear()
    model = NoiseMLP(jax.random.key(0))
    noise = jax.random.normal(jax.random.key(1), (BATCH, DIM), jnp.float32)
    ts = rx.log_snr_grid(schedule, 1.0, 1e-3, num_steps).astype(jnp.float32)
    solver = rx.Rex(diffrax.Euler(), "data")

    def loss(model, noise):
        term = rx.DiffusionTerm(model, schedule, "noise")
        return jnp.mean(rx.sample(term, solver, noise, ts, adjoint=adjoint) ** 2)

    params, static = eqx.partition(model, eqx.is_inexact_array)
    grad = jax.jit(jax.grad(lambda p, y: loss(eqx.combine(p, static), y), argnums=(0, 1)))
    start = time.perf_counter()
    compiled = grad.lower(params, noise).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    jax.block_until_ready(compiled(params, noise))
    peak = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
    row = dict(temp=mem.temp_size_in_bytes, peak=peak, compile=compile_s)
    return row, (lambda: jax.block_until_ready(compiled(params, noise)))


def measure_all(adjoints, num_steps, repeats):
    """Every adjoint at one number of steps; timings interleaved (round-robin, best of
    `repeats`) so that load from other jobs hits them alike."""
    rows, calls = {}, {}
    for name, adjoint in adjoints.items():
        rows[name], calls[name] = compile_grad(adjoint, num_steps)
        rows[name]["grad"] = float("inf")
    for _ in range(repeats):
        for name in adjoints:
            start = time.perf_counter()
            calls[name]()
            rows[name]["grad"] = min(rows[name]["grad"], time.perf_counter() - start)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="10,30,100,300,1000")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-direct", action="store_true")
    parser.add_argument("--quick", action="store_true", help="10 and 30 steps, 2 repeats")
    parser.add_argument("--out", default=None)
    cli = parser.parse_args()
    steps = [10, 30] if cli.quick else [int(s) for s in cli.steps.split(",")]
    repeats = 2 if cli.quick else cli.repeats
    out, log = out_dir(cli.out), Log()
    adjoints = {
        "Reversible": rx.ReversibleAdjoint(),
        "RecursiveCheckpoint": diffrax.RecursiveCheckpointAdjoint(),
    }
    if not cli.no_direct:
        adjoints["Direct"] = diffrax.DirectAdjoint()
    title = header("bench_adjoint_memory")
    log(f"# {title}")
    log(
        f"# float32, state {BATCH}x{DIM}, noise MLP 65-128-128-64, Rex(Euler, data), gradient "
        "w.r.t. MLP parameters and initial noise; time = best of the interleaved repeats"
    )
    rows = []
    for n in progress(steps, "steps"):
        res = measure_all(adjoints, n, repeats)
        ref = res["RecursiveCheckpoint"]
        for name in adjoints:
            r = res[name]
            rows.append(
                dict(
                    adjoint=name,
                    steps=n,
                    temp_kib=r["temp"] / 1024,
                    peak_kib=r["peak"] / 1024,
                    compile_s=r["compile"],
                    grad_ms=r["grad"] * 1e3,
                    time_vs_checkpoint=r["grad"] / ref["grad"],
                    temp_vs_checkpoint=r["temp"] / ref["temp"],
                )
            )
            log(
                f"  {name:>19s} N={n:5d}: temp {r['temp'] / 1024:9.1f} KiB, grad "
                f"{r['grad'] * 1e3:8.1f} ms ({r['grad'] / ref['grad']:.2f}x checkpointing)"
            )
    write_csv(rows, out / "adjoint_memory.csv")
    headers = [
        "adjoint",
        "steps",
        "temp KiB",
        "peak KiB",
        "compile s",
        "grad ms",
        "time / checkpoint",
        "temp / checkpoint",
    ]
    table = markdown_table([list(r.values()) for r in rows], headers, spec=".3g")
    rev = [r for r in rows if r["adjoint"] == "Reversible"]
    chk = [r for r in rows if r["adjoint"] == "RecursiveCheckpoint"]
    summary = (
        f"ReversibleAdjoint at N={steps[-1]}: {rev[-1]['time_vs_checkpoint']:.2f}x the time of "
        f"RecursiveCheckpointAdjoint, {rev[-1]['temp_vs_checkpoint']:.2f}x its temp memory. "
        f"Temp memory N={steps[-1]} / N={steps[0]}: Reversible "
        f"{rev[-1]['temp_kib'] / rev[0]['temp_kib']:.2f}x, RecursiveCheckpoint "
        f"{chk[-1]['temp_kib'] / chk[0]['temp_kib']:.2f}x."
    )
    log(table)
    log(summary)
    write_markdown(
        out / "adjoint_memory.md",
        title,
        [("Memory and time vs steps", table), ("Summary", summary)],
    )
    plt = pyplot()
    if plt is None:
        log("matplotlib not installed: no plot")
        return
    fig, (ax_m, ax_t) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name in adjoints:
        sel = [r for r in rows if r["adjoint"] == name]
        ax_m.loglog(steps, [r["temp_kib"] for r in sel], "o-", label=name)
        ax_t.loglog(steps, [r["grad_ms"] for r in sel], "o-", label=name)
    ax_m.set(xlabel="sampling steps", ylabel="compiled temp memory (KiB)", title="Memory")
    ax_t.set(xlabel="sampling steps", ylabel="gradient time (ms)", title="Time (CPU)")
    ax_m.legend()
    fig.suptitle("Gradient through Rex sampling: ReversibleAdjoint vs diffrax adjoints")
    fig.tight_layout()
    fig.savefig(out / "adjoint_memory.png", dpi=120)


if __name__ == "__main__":
    main()
