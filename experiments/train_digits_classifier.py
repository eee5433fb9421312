"""Train the evaluation classifier of the built-in digits model on the training split and
report its test accuracy; also store the reference statistics of its penultimate features on the
test and training splits (for FD-digits, the Frechet distance in these features).

AdamW (cosine decay), batch 64, random shifts of up to one pixel as augmentation,
deterministic from `--seed`. Writes `rexjax/models/checkpoints/digits_classifier.safetensors`
(weights) and `rexjax/models/checkpoints/digits_features.safetensors` (mean and covariance of
the features of the test and train splits), and `results/train_digits_classifier.md`.

    python experiments/train_digits_classifier.py
    python experiments/train_digits_classifier.py --quick --out /tmp/c   # smoke test
"""

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from common import Log, header, key, markdown_table, out_dir, progress, write_markdown
from rexjax.models._digits import CHECKPOINT_DIR, test_split, train_split
from rexjax.models._digits_classifier import init_classifier, save_classifier
from rexjax.models._fd import feature_statistics, frechet_distance


def shift(k, x):
    """Shift each image by (dy, dx) in {-1, 0, 1}^2, filling with the background (-1)."""
    dy, dx = jax.random.randint(k, (2, x.shape[0]), -1, 2)
    pad = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-1.0)

    def one(img, a, b):
        return jax.lax.dynamic_slice(img, (0, 1 + a, 1 + b), x.shape[1:])

    return jax.vmap(one)(pad, dy, dx)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke test: 5 steps")
    p.add_argument("--out", default=None, help="results folder (default experiments/results)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps = 5
    out = out_dir(args.out)
    weights = (out if args.quick else CHECKPOINT_DIR) / "digits_classifier.safetensors"
    stats_file = (out if args.quick else CHECKPOINT_DIR) / "digits_features.safetensors"
    log = Log()
    log(header("train_digits_classifier"))
    log(f"arguments: {vars(args)}")

    x_train, y_train = (jnp.asarray(a) for a in train_split())
    x_test, y_test = (jnp.asarray(a) for a in test_split())
    model = init_classifier(key(args.seed))
    schedule = optax.cosine_decay_schedule(args.lr, args.steps)
    optimiser = optax.adamw(schedule, weight_decay=1e-4)
    opt_state = optimiser.init(model.params)

    def loss_fn(params, x, y):
        logits = type(model)(params).logits(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, opt_state, k):
        kb, ks = jax.random.split(k)
        idx = jax.random.randint(kb, (args.batch,), 0, x_train.shape[0])
        x = shift(ks, x_train[idx])
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y_train[idx])
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = model.params
    root = jax.random.fold_in(key(args.seed), 1)
    t0 = time.perf_counter()
    for i in progress(range(args.steps), desc="classifier"):
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(root, i))
        if (i + 1) % 100 == 0:
            log(f"step {i + 1}: loss {float(loss):.4f}")
    model = type(model)(params)
    log(f"{args.steps} steps in {time.perf_counter() - t0:.0f} s")

    predict = eqx.filter_jit(lambda m, x: m.predict(x))
    acc_test = float(jnp.mean(predict(model, x_test) == y_test))
    acc_train = float(jnp.mean(predict(model, x_train) == y_train))
    log(f"accuracy: test {acc_test:.4f} ({x_test.shape[0]} images), train {acc_train:.4f}")
    save_classifier(model, weights)
    log(f"weights written to {weights}")

    feats = eqx.filter_jit(lambda m, x: m.features(x))
    f_test, f_train = np.asarray(feats(model, x_test)), np.asarray(feats(model, x_train))
    stats = {}
    for name, f in (("test", f_test), ("train", f_train)):
        mu, sigma = feature_statistics(f)
        stats[f"{name}.mean"], stats[f"{name}.cov"] = mu, sigma
    from safetensors.numpy import save_file

    save_file(stats, str(stats_file))
    fd = frechet_distance(
        stats["train.mean"], stats["train.cov"], stats["test.mean"], stats["test.cov"]
    )
    log(f"FD-digits(test split, train split) = {fd:.3f} (the floor for samples)")

    rows = [
        ["test accuracy", f"{acc_test:.4f}", f"{x_test.shape[0]} held-out images"],
        ["train accuracy", f"{acc_train:.4f}", f"{x_train.shape[0]} images"],
        ["FD-digits(test, train)", f"{fd:.3f}", "64 penultimate features"],
    ]
    if not args.quick:
        write_markdown(
            out / "train_digits_classifier.md",
            "Digits evaluation classifier",
            [
                ("Run", log.lines[0]),
                ("Results", markdown_table(rows, ["quantity", "value", "note"])),
            ],
        )
        log.save(out / "train_digits_classifier_log.txt")


if __name__ == "__main__":
    main()
