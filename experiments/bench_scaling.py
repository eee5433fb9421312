"""Data-parallel scaling of Rex sampling: throughput (samples/s) and per-device memory versus the
number of devices and the batch size, the batch sharded over a `jax.sharding.Mesh`.

Each device count runs in its own subprocess (the device count is fixed when JAX starts); on
a CPU the devices are virtual (`--xla_force_host_platform_device_count`), so they share the
same cores: there is no speed-up to be had, and the table measures the overhead of sharding
(partitioned programs, per-device dispatch). On several GPUs the same script is the scaling
table (`experiments/gpu_suite.py` calls it).

Workload: `rexjax.sample` with `Rex(Euler, data)` (probability-flow ODE) or `Rex(ShARK, data)`
with a key (reverse SDE, grid Brownian path), 20 log-SNR steps, a noise-prediction MLP
(D -> 256 -> 256 -> D, SiLU, D = 256) applied per element, float32, jitted; best of 3 after
compilation. Per-device memory is the compiled program's argument + output + temp bytes (XLA's
memory analysis, which reports one device's share).

Run: `python experiments/bench_scaling.py` (`--quick`: 1 and 2 devices, batch 8, a 16-wide
MLP and 4 steps: a smoke test).
Writes `experiments/results/scaling.{csv,md,png}`.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def child(devices, batches, repeats, quick):
    """Measure in this process (started with `devices` virtual devices); print JSON rows."""
    import diffrax
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import rexjax as rx

    assert jax.device_count() == devices, (jax.device_count(), devices)
    dim, hidden, steps = (16, 16, 4) if quick else (256, 256, 20)
    mesh = Mesh(np.asarray(jax.devices()), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    schedule = rx.VPSchedule.linear()
    ts = rx.log_snr_grid(schedule, 1.0, 1e-3, steps).astype(jnp.float32)
    mlp = eqx.nn.MLP(dim + 1, dim, hidden, 2, activation=jax.nn.silu, key=jax.random.key(0))
    params, static = eqx.partition(mlp, eqx.is_inexact_array)

    def model(t, x, p):
        net = eqx.combine(p, static)
        tx = jnp.concatenate([x, jnp.full((x.shape[0], 1), t, x.dtype)], axis=-1)
        return jax.vmap(net)(tx)

    term = rx.DiffusionTerm(model, schedule, "noise")
    ode = jax.jit(lambda p, y: rx.sample(term, rx.Rex(diffrax.Euler(), "data"), y, ts, p))
    sde = jax.jit(
        lambda p, y: rx.sample(
            term, rx.Rex(diffrax.ShARK(), "data"), y, ts, p, key=jax.random.key(1)
        )
    )
    rows = []
    for batch in batches:
        if batch % devices:
            continue
        y = jax.device_put(jax.random.normal(jax.random.key(2), (batch, dim)), sharding)
        for name, fn in (("ODE Rex(Euler)", ode), ("SDE Rex(ShARK)", sde)):
            start = time.perf_counter()
            compiled = fn.lower(params, y).compile()
            compile_s = time.perf_counter() - start
            mem = compiled.memory_analysis()
            jax.block_until_ready(compiled(params, y))
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                jax.block_until_ready(compiled(params, y))
                best = min(best, time.perf_counter() - start)
            per_device = mem.argument_size_in_bytes + mem.output_size_in_bytes
            per_device += mem.temp_size_in_bytes
            rows.append(
                dict(
                    solve=name,
                    devices=devices,
                    batch=batch,
                    samples_per_s=batch / best,
                    wall_ms=best * 1e3,
                    compile_s=compile_s,
                    mem_per_device_kib=per_device / 1024,
                )
            )
    print("ROWS " + json.dumps(rows), flush=True)


def run_child(devices, batches, repeats, platform, quick):
    env = dict(os.environ)
    if platform == "cpu":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        env["JAX_PLATFORMS"] = "cpu"
    root = str(Path(__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--child", str(devices), "--batches", batches]
    cmd += ["--repeats", str(repeats)] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{devices} devices failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROWS ")][-1]
    return json.loads(line[5:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--devices", default=None, help="device counts (default 1,2,4,8)")
    parser.add_argument("--batches", default="16,64,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--platform", default="cpu", help="cpu (virtual devices) or gpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    cli = parser.parse_args()
    if cli.child is not None:
        child(cli.child, [int(b) for b in cli.batches.split(",")], cli.repeats, cli.quick)
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from common import (
        Log,
        header,
        markdown_table,
        out_dir,
        progress,
        pyplot,
        write_csv,
        write_markdown,
    )

    if cli.quick:
        counts, batches, repeats = [1, 2], "8", 1
    else:
        counts, batches, repeats = [1, 2, 4, 8], cli.batches, cli.repeats
    if cli.devices:
        counts = [int(d) for d in cli.devices.split(",")]
    out, log = out_dir(cli.out), Log()
    title = header("bench_scaling")
    log(f"# {title}; devices: {cli.platform} (each count in its own process)")
    rows = []
    for d in progress(counts, "device counts"):
        rows += run_child(d, batches, repeats, cli.platform, cli.quick)
    base = {(r["solve"], r["batch"]): r for r in rows if r["devices"] == counts[0]}
    for r in rows:
        ref = base.get((r["solve"], r["batch"]))
        r["speedup_vs_first"] = r["samples_per_s"] / ref["samples_per_s"] if ref else float("nan")
    write_csv(rows, out / "scaling.csv")
    headers = ["solve", "devices", "batch", "samples/s", "wall ms", "compile s", "KiB/device"]
    headers.append(f"speed-up vs {counts[0]} device(s)")
    table = markdown_table([list(r.values()) for r in rows], headers, spec=".3g")
    log(table)
    note = (
        "Virtual CPU devices share this machine's cores: the speed-up column measures sharding "
        "overhead there, not scaling (expect <= 1). Per-device memory falls with the device "
        "count as each holds batch/devices rows (plus the replicated parameters). On GPUs the "
        "same run is the scaling table."
        if cli.platform == "cpu"
        else "One process, one device per shard."
    )
    write_markdown(out / "scaling.md", title, [("Throughput and memory", table), ("Notes", note)])
    plt = pyplot()
    if plt is None:
        log("matplotlib not installed: no plot")
        return
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(9, 3.4))
    for solve in sorted({r["solve"] for r in rows}):
        for batch in sorted({r["batch"] for r in rows}):
            sel = [r for r in rows if r["solve"] == solve and r["batch"] == batch]
            if not sel:
                continue
            label = f"{solve}, batch {batch}"
            ax_t.plot(
                [r["devices"] for r in sel], [r["samples_per_s"] for r in sel], "o-", label=label
            )
            ax_m.plot([r["devices"] for r in sel], [r["mem_per_device_kib"] for r in sel], "o-")
    ax_t.set(xlabel="devices", ylabel="samples / s", xscale="log", yscale="log")
    ax_m.set(xlabel="devices", ylabel="KiB per device", xscale="log", yscale="log")
    ax_t.legend(fontsize=6)
    fig.suptitle(f"Sharded Rex sampling ({cli.platform})")
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=120)


if __name__ == "__main__":
    main()
