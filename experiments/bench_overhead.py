"""Solver overhead of Rex on a model-dominated workload.

overhead = (wall time of jitted sampling) / (NFE x wall time of one model evaluation), where the
model time is measured inside a compiled loop of the same number of chained evaluations (no
dispatch overhead on either side). 1.00 means the solver adds nothing beyond its model calls;
the target for Rex is <= 1.10. Run: `python experiments/bench_overhead.py [--steps 20]`.
"""

import argparse
import platform
import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

import rexjax as rx


class MLP(eqx.Module):
    """A noise-prediction MLP with time input (random weights: only its cost matters here)."""

    layers: list

    def __init__(self, dim, width, depth, key):
        keys = jax.random.split(key, depth + 1)
        sizes = [dim + 1] + [width] * depth + [dim]
        self.layers = [
            eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys, strict=False)
        ]

    def __call__(self, t, x, args):
        h = jnp.concatenate([x, jnp.broadcast_to(t, x.shape[:-1] + (1,)).astype(x.dtype)], -1)
        for layer in self.layers[:-1]:
            h = jax.nn.gelu(jax.vmap(layer)(h))
        return 0.1 * jax.vmap(self.layers[-1])(h)


def best_time(fn, *args, repeats=5):
    fn(*args).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args).block_until_ready()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=3)
    opts = parser.parse_args()

    schedule = rx.VPSchedule.linear()
    model = MLP(opts.dim, opts.width, opts.depth, jax.random.key(0))
    term = rx.DiffusionTerm(model, schedule, "noise")
    x = jax.random.normal(jax.random.key(1), (opts.batch, opts.dim))
    ts = rx.log_snr_grid(schedule, 1.0, 1e-3, opts.steps)

    @jax.jit
    def chained_model_calls(x, n):
        return jax.lax.fori_loop(0, n, lambda i, y: model(0.5, y, None), x)

    per_call = {}

    def model_time(nfe):
        if nfe not in per_call:
            per_call[nfe] = best_time(chained_model_calls, x, nfe) / nfe
        return per_call[nfe]

    print(
        f"device: {jax.devices()[0].device_kind} ({platform.processor() or platform.machine()}), "
        f"jax {jax.__version__}; MLP {opts.depth}x{opts.width}, batch {opts.batch}x{opts.dim}, "
        f"{opts.steps} steps, float32"
    )
    print(f"{'solver':<26} {'NFE':>5} {'sample':>10} {'NFE x model':>12} {'overhead':>9}")
    for solver in (
        rx.Rex(diffrax.Euler(), "data"),
        rx.Rex(diffrax.Midpoint(), "data"),
        rx.Rex(rx.RK4(), "data"),
        rx.Rex(diffrax.Tsit5(), "data"),
        rx.Rex(diffrax.Tsit5(), "noise"),
        rx.Princeps(diffrax.Tsit5(), "data"),
    ):
        nfe = solver.evaluations_per_step() * opts.steps
        run = jax.jit(lambda y, solver=solver: rx.sample(term, solver, y, ts))
        sample_time = best_time(run, x)
        reference = nfe * model_time(nfe)
        name = f"{type(solver).__name__}({type(solver.base).__name__}, {solver.prediction})"
        print(
            f"{name:<26} {nfe:>5} {sample_time * 1e3:>8.1f}ms {reference * 1e3:>10.1f}ms "
            f"{sample_time / reference:>9.3f}"
        )


if __name__ == "__main__":
    main()
