r"""Train the flow-matching velocity model of each Boltzmann target (float32, optax).

Linear path $x_t = (1-t)x + t z$ ($z \sim N(0, I)$, `rexjax.FlowMatchingSchedule`), target
velocity $z - x$, in model units $x/$`scale`. Minibatches are OT-paired (exact assignment
between data and noise, scipy's Hungarian solver; Tong et al. 2024's OT-CFM). DW-4 data are
augmented by random rotations and particle permutations (both leave its energy and the
centre-of-mass Gaussian invariant). Adam with cosine decay. The weights go to
`models/<target>.safetensors` (committed; the study loads them and never trains).

Run: `nice -n 10 python experiments/boltzmann/train.py --target gmm40` (each target is about
2-5 min on 2 cores).
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

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402
from targets import MODELS, TARGETS, Velocity, save_model  # noqa: E402

import common  # noqa: E402


def augment(rng, x):
    """DW-4: a random rotation and particle permutation per sample."""
    n = x.shape[0]
    p = x.reshape(n, 4, 2)
    th = rng.uniform(0, 2 * np.pi, n)
    rot = np.stack([np.cos(th), -np.sin(th), np.sin(th), np.cos(th)], -1).reshape(n, 2, 2)
    p = np.einsum("nij,nkj->nki", rot, p)
    perm = np.argsort(rng.random((n, 4)), axis=1)
    p = np.take_along_axis(p, perm[:, :, None], axis=1)
    return p.reshape(n, 8)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=list(TARGETS), required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--pool", type=int, default=200000, help="training samples drawn")
    parser.add_argument("--out", default=None, help="weights file (default: models/)")
    args = parser.parse_args(argv)
    log = common.Log()
    log(common.header(f"flow matching on {args.target}"))
    target = TARGETS[args.target]()
    rng = np.random.default_rng(0)
    if args.target == "dw4":
        pool = np.load(Path(__file__).parent / "data" / "dw4_mcmc.npy").astype(np.float64)
    else:
        pool = np.asarray(target.sample(common.key(1), args.pool))
    pool = pool / target.scale
    log(f"{pool.shape[0]} training samples, model units x/{target.scale}")

    model = Velocity(target.dim, key=common.key(2))
    schedule = optax.cosine_decay_schedule(args.lr, args.steps, alpha=0.01)
    opt = optax.adam(schedule)
    opt_state = opt.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, opt_state, x, z, t):
        def loss_fn(m):
            xt = (1 - t[:, None]) * x + t[:, None] * z
            pred = jax.vmap(m)(t, xt)
            return jnp.mean(jnp.sum((pred - (z - x)) ** 2, -1))

        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        updates, opt_state = opt.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    start, losses = time.perf_counter(), []
    for i in common.progress(range(args.steps), desc=args.target):
        x = pool[rng.integers(0, pool.shape[0], args.batch)]
        if args.target == "dw4":
            x = augment(rng, x * target.scale) / target.scale
        z = rng.standard_normal(x.shape)
        cost = np.sum((x[:, None] - z[None]) ** 2, -1)
        _, cols = linear_sum_assignment(cost)
        t = rng.random(args.batch)
        model, opt_state, loss = step(
            model,
            opt_state,
            jnp.asarray(x, jnp.float32),
            jnp.asarray(z[cols], jnp.float32),
            jnp.asarray(t, jnp.float32),
        )
        losses.append(float(loss))
        if (i + 1) % 1000 == 0:
            log(f"step {i + 1}: loss {np.mean(losses[-1000:]):.4f}")
    log(f"trained in {time.perf_counter() - start:.0f} s")
    MODELS.mkdir(exist_ok=True)
    out = Path(args.out) if args.out else MODELS / f"{args.target}.safetensors"
    save_model(model, out)
    log.save(out.with_suffix(".log.txt"))


if __name__ == "__main__":
    main()
