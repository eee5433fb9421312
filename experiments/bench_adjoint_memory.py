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
- `compile`: lowering + compilation time; `grad`: the fastest of 5 calls after a warm-up (the
  minimum is the least disturbed by other jobs on a shared machine).

Run: `python experiments/bench_adjoint_memory.py` (a few minutes on 2 CPU cores; `--steps`
to change the list, `--no-direct` to skip DirectAdjoint). Writes
`experiments/results/adjoint_memory.txt` and `adjoint_memory.png`.
"""

import argparse
import datetime
import time
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

import rexjax as rx


RESULTS = Path(__file__).parent / "results"
BATCH, DIM = 16, 64


class NoiseMLP(eqx.Module):
    mlp: eqx.nn.MLP

    def __init__(self, key):
        self.mlp = eqx.nn.MLP(DIM + 1, DIM, 128, 2, activation=jax.nn.silu, key=key)

    def __call__(self, t, x, args):
        tx = jnp.concatenate([x, jnp.full((x.shape[0], 1), t, x.dtype)], axis=-1)
        return jax.vmap(self.mlp)(tx)


def measure(adjoint, num_steps, repeats=5):
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
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, noise))
        times.append(time.perf_counter() - start)
    peak = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
    return dict(temp=mem.temp_size_in_bytes, peak=peak, compile=compile_s, grad=min(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="10,30,100,300,1000")
    parser.add_argument("--no-direct", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    cli = parser.parse_args()
    steps = [int(s) for s in cli.steps.split(",")]
    adjoints = {
        "Reversible": rx.ReversibleAdjoint(),
        "RecursiveCheckpoint": diffrax.RecursiveCheckpointAdjoint(),
    }
    if not cli.no_direct:
        adjoints["Direct"] = diffrax.DirectAdjoint()

    results = {name: {} for name in adjoints}
    for n in steps:
        for name, adjoint in adjoints.items():
            results[name][n] = measure(adjoint, n)
            r = results[name][n]
            print(
                f"  {name:>19s} N={n:5d}: temp {r['temp'] / 1024:9.1f} KiB, "
                f"grad {r['grad'] * 1e3:8.1f} ms",
                flush=True,
            )

    lines = [
        f"# bench_adjoint_memory.py, {datetime.date.today()}, CPU, 2 cores, this machine "
        f"(shared with other jobs: times are indicative, memory is exact)",
        f"# float32, state {BATCH}x{DIM}, noise MLP 65-128-128-64, Rex(Euler, data), "
        "gradient w.r.t. MLP parameters and initial noise",
        f"{'adjoint':>19s} {'steps':>6s} {'temp KiB':>10s} {'peak KiB':>10s} "
        f"{'compile s':>10s} {'grad ms':>9s} {'temp / Reversible':>18s}",
    ]
    for n in steps:
        for name in adjoints:
            r = results[name][n]
            ratio = r["temp"] / results["Reversible"][n]["temp"]
            lines.append(
                f"{name:>19s} {n:6d} {r['temp'] / 1024:10.1f} {r['peak'] / 1024:10.1f} "
                f"{r['compile']:10.2f} {r['grad'] * 1e3:9.1f} {ratio:18.2f}"
            )
    rev = results["Reversible"]
    lines.append(
        f"# Reversible temp at N={steps[-1]} / N={steps[0]}: "
        f"{rev[steps[-1]]['temp'] / rev[steps[0]]['temp']:.2f}x; "
        f"RecursiveCheckpoint: {results['RecursiveCheckpoint'][steps[-1]]['temp'] / results['RecursiveCheckpoint'][steps[0]]['temp']:.2f}x"  # noqa: E501
    )
    text = "\n".join(lines)
    print(text)
    if cli.no_save:
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "adjoint_memory.txt").write_text(text + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_m, ax_t) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name in adjoints:
        ax_m.loglog(steps, [results[name][n]["temp"] / 1024 for n in steps], "o-", label=name)
        ax_t.loglog(steps, [results[name][n]["grad"] * 1e3 for n in steps], "o-", label=name)
    ax_m.set(xlabel="sampling steps", ylabel="compiled temp memory (KiB)", title="Memory")
    ax_t.set(xlabel="sampling steps", ylabel="gradient time (ms)", title="Time (CPU)")
    ax_m.legend()
    fig.suptitle("Gradient through Rex sampling: ReversibleAdjoint vs diffrax adjoints")
    fig.tight_layout()
    fig.savefig(RESULTS / "adjoint_memory.png", dpi=120)


if __name__ == "__main__":
    main()
