r"""Interpolating real digits on the built-in model (the Rex paper's §5.3 analogue).

Two held-out digits are inverted to t=1 under the unconditional model (the null class, so that
digits of different classes share one model), their latents are interpolated spherically
(slerp, every component of the solver state with the same weight) and decoded on the same grid.
Pairs: digit $2i$ and $2i+1$ of the test split (mixed classes).

Measured per method, over the interior frames of all pairs:

- realism: the classifier's top-class confidence and FD-digits of the interpolants against
  the test split;
- smoothness: consecutive-frame L2 distances, their max / mean ratio per path (1 = evenly
  spaced), and the path length over the straight end-to-end distance;
- end points: the MSE of the decoded end frames to the real digits (the round trip).

Methods: Rex Euler (data prediction, coupling 0.999; the paper's configuration), Rex ShARK on
the reverse SDE (both digits inverted with the same Brownian path, which the decoding replays)
and O-BELM.

Run: `python experiments/digits_interpolation.py [--pairs 50] [--frames 9] [--steps 20]`. Writes
`results/digits_interpolation.{csv,md,png}`, the image grid `digits_interpolation_grid.png`
and a log.
"""

import argparse
import sys
import time
from pathlib import Path

import jax


jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


sys.path.insert(0, str(Path(__file__).parent))
import digits_eval as de  # noqa: E402
import digits_solvers as ds  # noqa: E402

from common import (  # noqa: E402
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
from rexjax._png import image_grid, write_png  # noqa: E402
from rexjax.models import pretrained  # noqa: E402


def slerp(a, b, w):
    """Spherical interpolation per sample between arrays `a`, `b` (batch first) at weight `w`;
    0-d leaves (e.g. a multistep time) are taken from `a`."""
    if np.ndim(a) == 0:
        return a
    fa, fb = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    cos = np.sum(fa * fb, 1) / (np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1))
    theta = np.arccos(np.clip(cos, -1, 1))[:, None]
    sin = np.sin(theta)
    small = sin < 1e-6
    wa = np.where(small, 1 - w, np.sin((1 - w) * theta) / np.where(small, 1, sin))
    wb = np.where(small, w, np.sin(w * theta) / np.where(small, 1, sin))
    return (wa * fa + wb * fb).reshape(a.shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="Rex Euler,Rex ShARK SDE,O-BELM")
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    opts = parser.parse_args()
    if opts.quick:
        opts.pairs, opts.frames, opts.steps, opts.methods = 2, 3, 3, "Rex Euler,O-BELM"
    out = out_dir(opts.out)
    stem = out / "digits_interpolation"
    log = Log()
    log(header("digits interpolation"))
    images, labels = pretrained.digits_test_split()
    ev = de.Evaluator(pretrained.digits_classifier(), images)
    p = opts.pairs
    xa, xb = np.asarray(images[0 : 2 * p : 2]), np.asarray(images[1 : 2 * p : 2])
    term = ds.load_term(None)
    null = jnp.full((p,), pretrained.NULL_LABEL, jnp.int32)
    null_all = jnp.full((p * opts.frames,), pretrained.NULL_LABEL, jnp.int32)
    ts = jnp.asarray(ds.grid(term.schedule, opts.steps))
    n, tol = opts.steps, ds.brownian_tol(term.schedule)
    weights = np.linspace(0, 1, opts.frames)
    log(
        f"{p} pairs of held-out digits, {opts.frames} frames, {n} log-SNR steps t=1e-3 <-> 1, "
        "unconditional model (null class), float32"
    )
    rows, paths = [], {}
    for m in progress(ds.pick(opts.methods), "methods"):
        t0 = time.perf_counter()
        k = key(5) if m.sde else None
        lat_a, st_a = ds.invert_loop(m, term, jnp.asarray(xa), ts, n, null, k, tol)
        lat_b, st_b = ds.invert_loop(m, term, jnp.asarray(xb), ts, n, null, k, tol)
        frames_lat, frames_st = [], []
        for w in weights:
            frames_lat.append(slerp(np.asarray(lat_a), np.asarray(lat_b), w))
            frames_st.append(
                jax.tree_util.tree_map(
                    lambda a, b, w=w: slerp(np.asarray(a), np.asarray(b), w), st_a, st_b
                )
            )
        lat = jnp.asarray(np.concatenate(frames_lat))
        state = jax.tree_util.tree_map(
            lambda *xs: xs[0] if np.ndim(xs[0]) == 0 else jnp.asarray(np.concatenate(xs)),
            *frames_st,
        )
        # The SDE decodes every frame with the path it was inverted with: one path per pair
        # position (a batch of p), so the frames are decoded one weight at a time.
        if m.sde:
            dec = []
            for f in range(opts.frames):
                sl = slice(f * p, (f + 1) * p)
                st_f = jax.tree_util.tree_map(lambda a, sl=sl: a[sl], state)
                dec.append(
                    np.asarray(ds.sample_loop(m, term, lat[sl], ts, n, null, k, tol, st_f)[0])
                )
            x = np.concatenate(dec)
        else:
            x = np.asarray(ds.sample_loop(m, term, lat, ts, n, null_all, state=state)[0])
        x = x.reshape(opts.frames, p, *x.shape[1:])  # (frames, pairs, 1, 16, 16)
        paths[m.name] = x
        interior = x[1:-1].reshape(-1, *x.shape[2:])
        conf = np.max(de.softmax(ev.logits(interior)), -1)
        steps_d = np.linalg.norm((x[1:] - x[:-1]).reshape(opts.frames - 1, p, -1), axis=-1)
        direct = np.linalg.norm((x[-1] - x[0]).reshape(p, -1), axis=-1)
        row = dict(
            method=m.name,
            confidence=float(np.mean(conf)),
            fd=ev.fd(interior) if len(interior) > 2 else float("nan"),
            step_max_over_mean=float(np.mean(steps_d.max(0) / steps_d.mean(0))),
            length_over_direct=float(np.mean(steps_d.sum(0) / direct)),
            endpoint_mse=float(
                np.mean(de.mse(np.concatenate([x[0], x[-1]]), np.concatenate([xa, xb])))
            ),
            wall_s=time.perf_counter() - t0,
        )
        rows.append(row)
        log(
            ", ".join(
                f"{k_}={v:.4g}" if isinstance(v, float) else f"{k_}={v}" for k_, v in row.items()
            )
        )
        write_csv(rows, f"{stem}.csv")
    # The grid: for the first 4 pairs, one row per method.
    show = min(p, 4)
    grid_rows = [paths[name][:, i, 0] for i in range(show) for name in paths]
    write_png(f"{stem}_grid.png", image_grid(np.stack(grid_rows), scale=3))
    body = markdown_table(
        [
            [
                r["method"],
                r["confidence"],
                r["fd"],
                r["step_max_over_mean"],
                r["length_over_direct"],
                r["endpoint_mse"],
            ]
            for r in rows
        ],
        [
            "method",
            "confidence",
            "FD-digits (interior)",
            "max/mean step",
            "length/direct",
            "end-point MSE",
        ],
        ".3g",
    )
    grid_note = (
        f"`digits_interpolation_grid.png`: pairs 0..{show - 1}, one row per method in the "
        f"order {list(paths)}, frames left (digit A) to right (digit B)."
    )
    write_markdown(
        f"{stem}.md",
        "Digits interpolation",
        [("Run", log.lines[0] + "\n\n" + log.lines[1]), ("Results", body + "\n" + grid_note)],
    )
    log(body)
    plt = pyplot()
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, x in paths.items():
            c = np.max(de.softmax(ev.logits(x.reshape(-1, *x.shape[2:]))), -1)
            ax.plot(weights, c.reshape(opts.frames, p).mean(1), marker="o", label=name)
        ax.set(
            xlabel="slerp weight",
            ylabel="mean top-class confidence",
            title="Interpolation realism along the path",
        )
        ax.legend()
        fig.tight_layout()
        fig.savefig(f"{stem}.png", dpi=120)
    log.save(f"{stem}_log.txt")


if __name__ == "__main__":
    main()
