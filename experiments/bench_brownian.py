"""Cost of the replayable Brownian path: one tree query (a Rex SDE step makes one, forward and
backward) against one model evaluation, and SDE against ODE wall time per sampling step.

Run: `python experiments/bench_brownian.py` (CPU or GPU). Prints ratios measured side by side
in one run (best of 5 timings after compilation). The model is a small MLP denoiser on image-
shaped states; a real UNet costs far more per evaluation, so the Brownian overhead relative to
it is smaller than printed here.
"""

import datetime
import platform
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import rexjax as rx


def _best(fn, *args, repeats=5):
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return min(times)


def make_model(dim, hidden, key):
    k1, k2 = jax.random.split(key)
    w1 = jax.random.normal(k1, (dim, hidden)) / np.sqrt(dim)
    w2 = jax.random.normal(k2, (hidden, dim)) / np.sqrt(hidden)

    def model(t, x, args):
        flat = x.reshape(x.shape[0], -1)
        h = jnp.tanh(flat @ w1 + t)
        return (flat + h @ w2).reshape(x.shape)

    return model


def bench(schedule, ts, shape, hidden):
    """One row: times for one state shape and model size."""
    n_steps = ts.shape[0] - 1
    dim = int(np.prod(shape[1:]))
    model = make_model(dim, hidden, jax.random.key(0))
    term = rx.DiffusionTerm(model, schedule, "noise")
    y = jax.random.normal(jax.random.key(1), shape)
    t_model = _best(jax.jit(lambda x: model(0.5, x, None)), y)
    rows = {}
    for name, base in [("EM", diffrax.Euler()), ("ShARK", diffrax.ShARK())]:
        solver = rx.Rex(base, "data")
        sde = rx.reverse_sde(term, solver, jax.random.key(2), ts, y)
        v = rx.LawsonVariables(schedule, "data", stochastic=True)
        s0, s1 = v.time(ts[10]), v.time(ts[11])
        path = sde.path
        t_query = _best(jax.jit(path.increment), s0, s1)
        sde_fn = jax.jit(lambda x, k, s=solver: rx.sample(term, s, x, ts, key=k))
        t_sde = _best(sde_fn, y, jax.random.key(3)) / n_steps
        ode_fn = jax.jit(lambda x, s=solver: rx.sample(term, s, x, ts))
        t_ode = _best(ode_fn, y) / n_steps
        span = float(path.tree.t1 - path.tree.t0)
        depth = int(np.ceil(np.log2(span / float(path.tol))))
        rows[name] = (t_query, t_sde, t_ode, depth)
    tq, t_em, t_ode_em, depth = rows["EM"]
    _, t_shark, t_ode_shark, _ = rows["ShARK"]
    print(
        f"{shape} | {t_model * 1e3:.3f} ms | {tq * 1e3:.3f} ms | {tq / t_model:.1f} | "
        f"{t_ode_em * 1e3:.3f} / {t_ode_shark * 1e3:.3f} ms | {t_em * 1e3:.3f} ms | "
        f"{t_shark * 1e3:.3f} ms | {t_em / t_ode_em:.2f} | {t_shark / t_ode_shark:.2f} | {depth}"
    )


def main():
    schedule = rx.VPSchedule.linear()
    n_steps = 50
    ts = rx.log_snr_grid(schedule, 1.0, 1e-3, n_steps)
    print(
        f"# bench_brownian {datetime.date.today()} on {jax.devices()[0].device_kind} "
        f"({platform.machine()}, {jax.device_count()} device), jax {jax.__version__}, "
        f"float32, Rex data prediction, {n_steps} log-SNR steps"
    )
    print(
        "shape | model eval | tree query | query/model | ODE step (EM / ShARK base) | "
        "SDE step (EM) | SDE step (ShARK) | SDE/ODE (EM) | SDE/ODE (ShARK) | tree levels"
    )
    for shape, hidden in [((4, 3, 32, 32), 512), ((16, 3, 64, 64), 1024)]:
        bench(schedule, ts, shape, hidden)
    print(
        "A Rex step: ODE = 2 model evaluations (Euler base) or 4 (ShARK: 2 stages); the SDE adds "
        "one tree query per step (its W, H are reused, negated, by the reverse substep)."
    )


if __name__ == "__main__":
    main()
