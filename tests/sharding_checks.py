"""Data-parallel checks run in a subprocess with several (virtual) devices.

`python tests/sharding_checks.py OUT.json` (with XLA_FLAGS=--xla_force_host_platform_device_count
=8) samples, inverts and differentiates a batch sharded over all devices and compares with one
device; `--process-id I --num-processes P --port N` runs the same across P processes over
loopback (jax.distributed, gloo CPU collectives), each holding a slice of the batch. Results are
written as JSON for `tests/test_sharding.py` to assert on; this file is not a test module.
"""

import argparse
import json
import os
import re


def _parse():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--port", type=int, default=0)
    return p.parse_args()


CLI = _parse()

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax  # noqa: E402


jax.config.update("jax_enable_x64", True)
if CLI.num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"127.0.0.1:{CLI.port}",
        num_processes=CLI.num_processes,
        process_id=CLI.process_id,
        initialization_timeout=60,
    )

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

import rexjax as rx  # noqa: E402


SCHEDULE = rx.VPSchedule.linear()
BATCH, DIM, STEPS = 16, 4, 8
TS = rx.log_snr_grid(SCHEDULE, 1.0, 1e-3, STEPS)
KEY = jax.random.key(7)


class NoiseMLP(eqx.Module):
    """A per-element noise-prediction MLP (parameters replicated, batch along axis 0)."""

    l1: eqx.nn.Linear
    l2: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.l1 = eqx.nn.Linear(DIM + 1, 16, key=k1)
        self.l2 = eqx.nn.Linear(16, DIM, key=k2)

    def __call__(self, t, x, args):
        tx = jnp.concatenate([x, jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0], 1))], 1)
        return jax.vmap(lambda z: self.l2(jnp.tanh(self.l1(z))))(tx)


class GaussNoise(eqx.Module):
    """The exact noise prediction of Gaussian data N(mu, s^2): elementwise, so a sharded run
    must equal the single-device one bitwise (an MLP's matmul kernels depend on the per-device
    batch size, which changes the round-off)."""

    mu: jax.Array
    s: jax.Array

    def __call__(self, t, x, args):
        a, sg = SCHEDULE.alpha(t), SCHEDULE.sigma(t)
        return sg * (x - a * self.mu) / (a**2 * self.s**2 + sg**2)


MODEL = NoiseMLP(jax.random.key(0))
GAUSS = GaussNoise(jnp.asarray(0.5), jnp.asarray(0.3))
SOLVER = rx.Rex(diffrax.Euler(), "data")
SDE_SOLVER = rx.Rex(diffrax.ShARK(), "data")


def _term(model):
    return rx.DiffusionTerm(model, SCHEDULE, "noise")


@jax.jit
def sample_ode(model, y):
    return rx.sample(_term(model), SOLVER, y, TS)


@jax.jit
def invert_ode(model, x):
    return rx.invert(_term(model), SOLVER, x, TS)


@jax.jit
def sample_sde(model, y):
    return rx.sample(_term(model), SDE_SOLVER, y, TS, key=KEY)


@jax.jit
def round_trip_sde(model, x):
    latent = rx.invert(_term(model), SDE_SOLVER, x, TS, key=KEY)
    return rx.sample(_term(model), SDE_SOLVER, latent, TS, key=KEY)


@jax.jit
def grads(model, y):
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p, y):
        x = rx.sample(_term(eqx.combine(p, static)), SOLVER, y, TS)  # ReversibleAdjoint
        return jnp.sum(jnp.sin(3 * x) + x**2)

    return jax.grad(loss, argnums=(0, 1))(params, y)


def _collectives(fn, *args):
    """Counts of each collective op in the compiled HLO outside the error branches, and the
    largest all-reduce there.

    The error branches of `eqx.error_if` (taken only to raise: a host callback placed on one
    device, which gathers what it reports) are left out: they never run in a successful solve.
    """
    text = fn.lower(*args).compile().as_text()
    blocks = {}  # HLO computation name -> its text
    for block in re.split(r"\n(?=\S)", text):
        m = re.match(r"(?:ENTRY )?%?([\w.\-]+)", block)
        if m:
            blocks[m.group(1)] = block
    calls = {
        name: set(re.findall(r"(?:calls|to_apply|computation|body|condition)=%([\w.\-]+)", b))
        | {
            c
            for grp in re.findall(r"branch_computations=\{([^}]*)\}", b)
            for c in re.findall(r"%([\w.\-]+)", grp)
        }
        for name, b in blocks.items()
    }
    # The branches of error checks' conditionals, and everything they call.
    todo = [
        c
        for b in blocks.values()
        for line in b.splitlines()
        if " conditional(" in line and "branched_error_if" in line
        for c in re.findall(r"(?:computation|branch_computations)=\{?%([\w.\-]+)", line)
        + re.findall(r"%([\w.\-]+)", line.split("branch_computations=")[-1])
        * ("branch_computations=" in line)
    ]
    errors = set()
    while todo:
        c = todo.pop()
        if c in blocks and c not in errors:
            errors.add(c)
            todo += calls[c]
    text = "\n".join(b for name, b in blocks.items() if name not in errors)
    counts = {
        op: len(re.findall(rf"\b{op}(-start)?\(", text))
        for op in ("all-gather", "all-to-all", "collective-permute", "all-reduce")
    }
    # The element count of each all-reduce result (scalars are predicates of error checks).
    sizes = []
    for m in re.finditer(r"= \(?([a-z0-9]+)\[([0-9,]*)\][^=]*\ball-reduce(-start)?\(", text):
        dims = [int(d) for d in m.group(2).split(",") if d]
        sizes.append(int(np.prod(dims)) if dims else 1)
    counts["all-reduce max elements"] = max(sizes, default=0)
    counts["send/recv/infeed/outfeed"] = len(
        re.findall(r"\b(send|recv|infeed|outfeed)(-done)?\(", text)
    )
    return counts


def _gather(x):
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def main():
    devices = np.asarray(jax.devices())
    mesh = Mesh(devices, ("batch",))
    batch = NamedSharding(mesh, P("batch"))
    y = jax.random.normal(jax.random.key(1), (BATCH, DIM))
    x = 0.5 + 0.3 * jax.random.normal(jax.random.key(2), (BATCH, DIM))
    if CLI.num_processes > 1:
        # Each process holds its own rows of the batch: the multi-host recipe.
        rows = BATCH // CLI.num_processes
        mine = slice(CLI.process_id * rows, (CLI.process_id + 1) * rows)
        y_s = jax.make_array_from_process_local_data(batch, np.asarray(y)[mine], (BATCH, DIM))
        x_s = jax.make_array_from_process_local_data(batch, np.asarray(x)[mine], (BATCH, DIM))
    else:
        y_s, x_s = jax.device_put(y, batch), jax.device_put(x, batch)
    # One device: the reference (the arrays above live on this process's default device).
    y1, x1, model1 = y, x, MODEL

    out = dict(devices=len(devices), processes=jax.process_count())
    for name, fn, a1, a_s in (
        ("sample_ode", sample_ode, y1, y_s),
        ("invert_ode", invert_ode, x1, x_s),
        ("sample_sde", sample_sde, y1, y_s),
        ("round_trip_sde", round_trip_sde, x1, x_s),
    ):
        single = fn(GAUSS, a1)
        sharded = fn(GAUSS, a_s)
        leaves_1 = jax.tree_util.tree_leaves(single)
        leaves_s = jax.tree_util.tree_leaves(sharded)
        out[name] = dict(
            bitwise=all(
                np.array_equal(np.asarray(a), _gather(b))
                for a, b in zip(leaves_1, leaves_s, strict=True)
            ),
            max_abs_diff=max(
                float(np.max(np.abs(np.asarray(a) - _gather(b))))
                for a, b in zip(leaves_1, leaves_s, strict=True)
            ),
            out_sharded=all(b.sharding.is_equivalent_to(batch, b.ndim) for b in leaves_s),
            hlo=_collectives(fn, GAUSS, a_s),
        )
    out["round_trip_sde"]["round_trip_err"] = float(
        np.max(np.abs(_gather(round_trip_sde(GAUSS, x_s)) - np.asarray(x)))
    )
    g1 = grads(model1, y1)
    gs = grads(MODEL, y_s)
    pairs = list(
        zip(jax.tree_util.tree_leaves(g1[0]), jax.tree_util.tree_leaves(gs[0]), strict=True)
    )
    out["grads"] = dict(
        params_rel=max(
            float(np.max(np.abs(np.asarray(a) - _gather(b))) / np.max(np.abs(np.asarray(a))))
            for a, b in pairs
        ),
        y_bitwise=bool(np.array_equal(np.asarray(g1[1]), _gather(gs[1]))),
        y_rel=float(
            np.max(np.abs(np.asarray(g1[1]) - _gather(gs[1]))) / np.max(np.abs(np.asarray(g1[1])))
        ),
        y_sharded=gs[1].sharding.is_equivalent_to(batch, 2),
        hlo=_collectives(grads, MODEL, y_s),
    )
    if jax.process_index() == 0:
        with open(CLI.out, "w") as f:
            json.dump(out, f, indent=1)
    if CLI.num_processes > 1:
        multihost_utils.sync_global_devices("done")
        jax.distributed.shutdown()


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
