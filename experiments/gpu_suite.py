"""One command for a GPU: every speed figure of rexjax, measured side by side in one run.

(a) the Flax SD 1.5 UNet (`rexjax.models`) against diffusers' PyTorch UNet2DConditionModel on
    the same device: float32, bfloat16, float16; batch 1, 4, 16; 64x64x4 latents, 77 text
    tokens; JAX compile time reported separately; calls interleaved, medians;
(b) Rex solver overhead with that UNet: wall time of `rexjax.sample` / (NFE x UNet time);
(c) Brownian cost per UNet evaluation: one query of the grid path (default) and of the
    Brownian tree (`tol=`), each over one UNet evaluation;
(d) gradient through sampling: time and compiled memory of `ReversibleAdjoint` against
    `RecursiveCheckpointAdjoint` versus the number of steps;
(e) sharded sampling throughput over 1, 2, 4, ... devices when there are several.

Weights are random with the SD 1.5 shapes (`rexjax.models.random_unet(SD15_UNET_CONFIG, key)`
for JAX, diffusers' own initialisation for PyTorch): nothing is downloaded. The two networks'
weights differ, which does not change their speed. Without torch/diffusers (or without a CUDA
build of torch on a GPU machine) part (a) reports only the JAX side and says so.

Run on a GPU: `python experiments/gpu_suite.py` (writes
`experiments/results/gpu_suite_<date>_<device>.{md,csv,png}`). `--tiny` runs every part end to
end on the CPU at toy sizes (a 2-level UNet, 8x8 latents, few steps): the smoke test.
"""

import argparse
import statistics
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import rexjax as rx
import rexjax.models as rm
from common import Log, header, markdown_table, out_dir, pyplot, write_csv, write_markdown


TINY_CONFIG = dict(
    rm.SD15_UNET_CONFIG,
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=8,
    sample_size=8,
)


def median_time(fns: dict, repeats: int) -> dict:
    """Median wall time of each no-argument function (already warmed up), calls interleaved."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def timed_compile(fn, *args):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    return compiled, seconds


class Suite:
    def __init__(self, cli, log):
        self.cli, self.log = cli, log
        self.config = TINY_CONFIG if cli.tiny else dict(rm.SD15_UNET_CONFIG)
        self.size = 8 if cli.tiny else 64
        self.tokens = 77
        self.ctx_dim = self.config["cross_attention_dim"]
        self.repeats = 2 if cli.tiny else cli.repeats
        self.rows = []

    def inputs(self, batch, dtype):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, 4, self.size, self.size)).astype(np.float32)
        c = rng.standard_normal((batch, self.tokens, self.ctx_dim)).astype(np.float32)
        return x, c

    def unet(self, dtype):
        return rm.random_unet(self.config, jax.random.key(0), dtype=dtype)

    # (a) ---------------------------------------------------------------------------------
    def unet_vs_torch(self):
        cli = self.cli
        dtypes = ["float32"] if cli.tiny else ["float32", "bfloat16", "float16"]
        batches = [1] if cli.tiny else [1, 4, 16]
        torch_model, device, why = self._torch_unet()
        out = []
        for dtype in dtypes:
            unet = self.unet(dtype)
            tm = None
            if torch_model is not None:
                import torch

                tm = torch_model.to(getattr(torch, dtype))
            for batch in batches:
                x, c = self.inputs(batch, dtype)
                xj, cj = jnp.asarray(x, dtype), jnp.asarray(c, dtype)
                compiled, compile_s = timed_compile(lambda u, x, c: u(x, 500.0, c), unet, xj, cj)
                args = (unet, xj, cj)
                fns = {"jax": lambda f=compiled, a=args: jax.block_until_ready(f(*a))}
                if tm is not None:
                    fns["torch"] = self._torch_call(tm, device, x, c, dtype)
                    fns["torch"]()
                med = median_time(fns, self.repeats)
                row = dict(
                    part="a", dtype=dtype, batch=batch, jax_s=med["jax"], compile_s=compile_s
                )
                row["torch_s"] = med.get("torch", float("nan"))
                row["torch_over_jax"] = row["torch_s"] / row["jax_s"]
                out.append(row)
                self.log(
                    f"(a) {dtype} batch {batch}: jax {med['jax'] * 1e3:.2f} ms, torch "
                    f"{row['torch_s'] * 1e3:.2f} ms, compile {compile_s:.1f} s"
                )
        self.rows += out
        table = markdown_table(
            [
                [r["dtype"], r["batch"], r["jax_s"] * 1e3, r["torch_s"] * 1e3]
                + [r["torch_over_jax"], r["compile_s"]]
                for r in out
            ],
            ["dtype", "batch", "JAX ms", "PyTorch ms", "PyTorch / JAX", "JAX compile s"],
            spec=".3g",
        )
        return table + ("" if why is None else f"\nPyTorch side not measured: {why}\n"), out

    def _torch_unet(self):
        try:
            import torch
            from diffusers import UNet2DConditionModel
        except ImportError as err:
            return None, None, f"torch/diffusers not importable ({err})"
        on_gpu = jax.default_backend() == "gpu"
        if on_gpu and not torch.cuda.is_available():
            return None, None, "this torch build has no CUDA: comparing on different devices"
        device = "cuda" if on_gpu else "cpu"
        torch.manual_seed(0)
        config = {k: v for k, v in self.config.items() if not k.startswith("_")}
        model = UNet2DConditionModel(**config).eval().to(device)
        return model, device, None

    def _torch_call(self, model, device, x, c, dtype):
        import torch

        dt = getattr(torch, dtype)
        xt = torch.from_numpy(x).to(device=device, dtype=dt)
        ct = torch.from_numpy(c).to(device=device, dtype=dt)

        def call():
            with torch.no_grad():
                model(xt, 500, ct)
            if device == "cuda":
                torch.cuda.synchronize()

        return call

    # (b), (c) -----------------------------------------------------------------------------
    def solver_overhead_and_brownian(self):
        batch = 1 if self.cli.tiny else 4
        steps = 4 if self.cli.tiny else 20
        dtype = "float32"
        term = rm.diffusion_term(self.unet(dtype), rm.SD15_SCHEDULER_CONFIG)
        x, c = self.inputs(batch, dtype)
        y, ctx = jnp.asarray(x), jnp.asarray(c)
        ts = rx.log_snr_grid(term.schedule, 1.0, 1e-3, steps).astype(jnp.float32)
        eval_fn, _ = timed_compile(lambda y, c: term.model(0.5, y, c), y, ctx)
        fns = {"eval": lambda: jax.block_until_ready(eval_fn(y, ctx))}
        solvers = {
            "Rex(Euler) ODE": (rx.Rex(diffrax.Euler(), "noise"), None),
            "Rex(ShARK) SDE grid": (rx.Rex(diffrax.ShARK(), "data"), "grid"),
        }
        nfe = {}
        for name, (solver, path) in solvers.items():
            k = None if path is None else jax.random.key(1)

            def run(y, c, solver=solver, k=k):
                return rx.sample(term, solver, y, ts, c, key=k)

            compiled, _ = timed_compile(run, y, ctx)
            fns[name] = lambda compiled=compiled: jax.block_until_ready(compiled(y, ctx))
            nfe[name] = solver.evaluations_per_step() * steps
        v = rx.LawsonVariables(term.schedule, "data", stochastic=True)
        s = v.time(ts)
        tol = 0.5 * float(jnp.min(jnp.abs(jnp.diff(s))))
        shark = rx.Rex(diffrax.ShARK(), "data")
        for name, path_tol in (("grid query", None), ("tree query", tol)):
            path = rx.reverse_sde(term, shark, jax.random.key(1), ts, y, tol=path_tol).path
            query, _ = timed_compile(lambda p, a, b: p.increment(a, b), path, s[1], s[2])
            fns[name] = lambda q=query, p=path: jax.block_until_ready(q(p, s[1], s[2]))
        med = median_time(fns, self.repeats)
        rows = []
        for name in solvers:
            ratio = med[name] / (nfe[name] * med["eval"])
            rows.append(dict(part="b", what=name, seconds=med[name], nfe=nfe[name], ratio=ratio))
        for name in ("grid query", "tree query"):
            rows.append(
                dict(part="c", what=name, seconds=med[name], nfe=1, ratio=med[name] / med["eval"])
            )
        self.rows += rows
        self.log(
            f"(b,c) UNet eval {med['eval'] * 1e3:.2f} ms; "
            + "; ".join(f"{r['what']}: {r['ratio']:.3g}" for r in rows)
        )
        table = markdown_table(
            [[r["part"], r["what"], r["seconds"] * 1e3, r["nfe"], r["ratio"]] for r in rows],
            ["part", "what", "ms", "NFE", "ms / (NFE x UNet eval)"],
            spec=".3g",
        )
        return (
            f"UNet evaluation: {med['eval'] * 1e3:.3g} ms (batch {batch}, "
            f"{self.size}x{self.size})\n\n" + table
        )

    # (d) --------------------------------------------------------------------------------
    def adjoint(self):
        steps_list = [2, 4] if self.cli.tiny else [5, 10, 25, 50]
        term = rm.diffusion_term(self.unet("float32"), rm.SD15_SCHEDULER_CONFIG)
        x, c = self.inputs(1, "float32")
        y, ctx = jnp.asarray(x), jnp.asarray(c)
        solver = rx.Rex(diffrax.Euler(), "noise")
        rows = []
        for steps in steps_list:
            ts = rx.log_snr_grid(term.schedule, 1.0, 1e-3, steps).astype(jnp.float32)
            fns, mems = {}, {}
            for name, adj in (
                ("Reversible", rx.ReversibleAdjoint()),
                ("RecursiveCheckpoint", diffrax.RecursiveCheckpointAdjoint()),
            ):

                def loss(y, c, adj=adj, ts=ts):
                    return jnp.mean(rx.sample(term, solver, y, ts, c, adjoint=adj) ** 2)

                compiled, _ = timed_compile(jax.grad(loss), y, ctx)
                mems[name] = compiled.memory_analysis().temp_size_in_bytes
                fns[name] = lambda compiled=compiled: jax.block_until_ready(compiled(y, ctx))
            med = median_time(fns, self.repeats)
            row = dict(part="d", steps=steps)
            for name in fns:
                row[f"{name}_s"], row[f"{name}_temp_mib"] = med[name], mems[name] / 2**20
            row["time_ratio"] = med["Reversible"] / med["RecursiveCheckpoint"]
            rows.append(row)
            self.log(f"(d) {steps} steps: time ratio {row['time_ratio']:.2f}")
        self.rows += rows
        return markdown_table(
            [
                [r["steps"], r["Reversible_s"], r["RecursiveCheckpoint_s"], r["time_ratio"]]
                + [r["Reversible_temp_mib"], r["RecursiveCheckpoint_temp_mib"]]
                for r in rows
            ],
            [
                "steps",
                "Reversible s",
                "Checkpoint s",
                "time ratio",
                "Reversible MiB",
                "Checkpoint MiB",
            ],
            spec=".3g",
        )

    # (e) --------------------------------------------------------------------------------
    def sharded(self):
        n = jax.device_count()
        if n < 2:
            return f"Only {n} device: no scaling measured."
        term = rm.diffusion_term(self.unet("float32"), rm.SD15_SCHEDULER_CONFIG)
        steps = 4 if self.cli.tiny else 20
        ts = rx.log_snr_grid(term.schedule, 1.0, 1e-3, steps).astype(jnp.float32)
        solver = rx.Rex(diffrax.Euler(), "noise")
        per_device = 1 if self.cli.tiny else 4
        rows, counts = [], [d for d in (1, 2, 4, 8, 16) if d <= n]
        for d in counts:
            mesh = Mesh(np.asarray(jax.devices()[:d]), ("batch",))
            sh = NamedSharding(mesh, PartitionSpec("batch"))
            x, c = self.inputs(per_device * d, "float32")
            y, ctx = jax.device_put(jnp.asarray(x), sh), jax.device_put(jnp.asarray(c), sh)
            compiled, _ = timed_compile(lambda y, c: rx.sample(term, solver, y, ts, c), y, ctx)
            call = {"s": lambda f=compiled, a=(y, ctx): jax.block_until_ready(f(*a))}
            med = median_time(call, self.repeats)
            rows.append(
                dict(
                    part="e",
                    devices=d,
                    batch=per_device * d,
                    samples_per_s=per_device * d / med["s"],
                )
            )
        base = rows[0]["samples_per_s"]
        for r in rows:
            r["efficiency"] = r["samples_per_s"] / (base * r["devices"])
        self.rows += rows
        return markdown_table(
            [[r["devices"], r["batch"], r["samples_per_s"], r["efficiency"]] for r in rows],
            ["devices", "batch", "samples/s", "efficiency vs linear"],
            spec=".3g",
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes on CPU (smoke test)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--parts", default="abcde")
    parser.add_argument("--out", default=None)
    cli = parser.parse_args()
    out, log = out_dir(cli.out), Log()
    title = header("gpu_suite" + (" --tiny" if cli.tiny else ""))
    log(f"# {title}")
    suite = Suite(cli, log)
    sections = []
    if "a" in cli.parts:
        table, rows_a = suite.unet_vs_torch()
        sections.append(("(a) SD 1.5 UNet: Flax (jit) vs diffusers PyTorch", table))
    if "b" in cli.parts or "c" in cli.parts:
        sections.append(
            (
                "(b) Rex overhead and (c) Brownian cost per UNet evaluation",
                suite.solver_overhead_and_brownian(),
            )
        )
    if "d" in cli.parts:
        sections.append(
            ("(d) Gradient through sampling: ReversibleAdjoint vs checkpointing", suite.adjoint())
        )
    if "e" in cli.parts:
        sections.append(("(e) Sharded sampling", suite.sharded()))
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform).replace(" ", "_")
    stem = "gpu_suite_tiny" if cli.tiny else f"gpu_suite_{time.strftime('%Y-%m-%d')}_{kind}"
    keys = sorted({k for r in suite.rows for k in r})
    write_csv([{k: r.get(k, "") for k in keys} for r in suite.rows], out / f"{stem}.csv")
    write_markdown(out / f"{stem}.md", title, sections)
    for heading, body in sections:
        log(f"\n## {heading}\n\n{body}")
    plt = pyplot()
    if plt is not None and "a" in cli.parts:
        fig, ax = plt.subplots(figsize=(6, 3.4))
        labels = [f"{r['dtype']}\nb={r['batch']}" for r in rows_a]
        ax.bar(range(len(rows_a)), [r["torch_over_jax"] for r in rows_a])
        ax.axhline(1, color="k", lw=0.8)
        ax.set_xticks(range(len(rows_a)), labels, fontsize=7)
        ax.set_ylabel("PyTorch time / JAX time")
        fig.tight_layout()
        fig.savefig(out / f"{stem}.png", dpi=120)
    log(f"wrote {out / stem}.md/.csv")


if __name__ == "__main__":
    main()
