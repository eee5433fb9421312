"""Stability study: linear-stability regions of Rex (several couplings) against BDIA, O-BELM and
EDICT, and the round-trip error over up to 1000 steps (which methods stay bounded).

1. Linear stability. Every method works in variables where the drift is the model prediction
   alone (Rex: Y = x/kappa in the Lawson time; DDIM, BDIA, EDICT, O-BELM: x/alpha in
   sigma/alpha, where DDIM is Euler). The test equation is dY/ds = lam Y, z = h lam, on a
   uniform grid. Each method is then a linear recursion on its state (Rex: (x, xh); EDICT:
   (x, y); BDIA and O-BELM: (z_i, z_{i+1})) with a 2x2 amplification matrix M(z); the method
   is stable where the spectral radius rho(M(z)) <= 1. The inverse map has M(z)^{-1}: a
   method whose forward step is contractive (|eigenvalue| < 1) amplifies in the inverse.
   - Rex (McCallum & Foster coupling, base stability function R): x' = zeta x + (R(z) - zeta)
     xh, xh' = xh - (R(-z) - 1) x'. det M = zeta.
   - EDICT (p): x_i = x + z y, y_i = y + z x_i, x' = p x_i + (1-p) y_i, y' = p y_i + (1-p) x'.
   - BDIA (gamma): z_{i-1} = gamma (z_{i+1} - (1 - z) z_i) + (1 + z) z_i.
   - O-BELM (uniform steps): x_{i-1} = x_{i+1} - 2 H eps_i, i.e. leapfrog, rho^2 - 2 z rho - 1.
2. Round trips over N = 10 ... 1000 log-SNR steps on the analytic Gaussian mixture, float64 and
   float32: max relative error of data -> invert -> sample.

Run: `python experiments/stability.py [--out DIR]`. Writes `results/stability_regions.png`,
`results/stability_roundtrip.{csv,png}` and `results/stability_log.txt`.
"""

import argparse
import csv
import datetime
import os
import sys
import time
from pathlib import Path


os.environ.setdefault("EQX_ON_ERROR", "nan")  # record divergence (as inf) instead of raising

import diffrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


jax.config.update("jax_enable_x64", True)

import rexjax as rx  # noqa: E402
from rexjax._reversible import base_tableau  # noqa: E402
from rexjax.baselines import BDIA, BELM, EDICT  # noqa: E402


sys.path.insert(0, str(Path(__file__).parent))
from reconstruction import backward, forward, make_problem, rel  # noqa: E402


# ----------------------------------------------------------------------------- regions


def stability_function(base):
    """R(z) = 1 + z b^T (I - z A)^{-1} 1 of an explicit RK tableau (vectorised over z)."""
    tab = base_tableau(base)
    s = len(tab.b_sol)
    a = np.zeros((s, s))
    for i, row in enumerate(tab.a_lower, start=1):
        a[i, : len(row)] = row
    b = np.asarray(tab.b_sol, dtype=float)

    def r(z):
        z = np.asarray(z, dtype=complex)
        eye = np.eye(s)
        mats = eye[None] - z.reshape(-1, 1, 1) * a[None]
        k = np.linalg.solve(mats, np.ones((z.size, s, 1)))[..., 0]
        return (1 + z.reshape(-1) * (k @ b)).reshape(z.shape)

    return r


def spectral_radius(m11, m12, m21, m22):
    """Largest |eigenvalue| of the 2x2 matrices [[m11, m12], [m21, m22]] (elementwise)."""
    tr, det = m11 + m22, m11 * m22 - m12 * m21
    disc = np.sqrt(tr**2 / 4 - det + 0j)
    return np.maximum(np.abs(tr / 2 + disc), np.abs(tr / 2 - disc))


def rho_rex(z, r, zeta):
    rz, rmz = r(z), r(-z)
    m11, m12 = zeta, rz - zeta
    c = rmz - 1
    return spectral_radius(m11, m12, -c * m11, 1 - c * m12)


def rho_edict(z, p):
    # Columns: the images of (x, y) = (1, 0) and (0, 1).
    def step(x, y):
        xi = x + z * y
        yi = y + z * xi
        x1 = p * xi + (1 - p) * yi
        return x1, p * yi + (1 - p) * x1

    (a11, a21), (a12, a22) = step(1.0, 0.0), step(0.0, 1.0)
    return spectral_radius(a11, a12, a21, a22)


def rho_bdia(z, gamma):
    # State (z_i, z_{i+1}) -> (z_{i-1}, z_i).
    return spectral_radius((1 + z) - gamma * (1 - z), gamma, 1.0, 0.0)


def rho_belm(z):
    return spectral_radius(2 * z, 1.0, 1.0, 0.0)


def plot_regions(out, log):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    re, im = np.meshgrid(np.linspace(-5, 1.5, 521), np.linspace(-3.5, 3.5, 561))
    z = re + 1j * im
    panels = []
    for name, base in [("Euler", diffrax.Euler()), ("RK4", rx.RK4()), ("Tsit5", diffrax.Tsit5())]:
        r = stability_function(base)
        panels.append(
            (
                f"Rex ({name})",
                [(f"zeta={c}", rho_rex(z, r, c)) for c in (1.0, 0.999, 0.9, 0.5, 0.1)],
            )
        )
    panels.append(("EDICT", [(f"p={p}", rho_edict(z, p)) for p in (0.93, 0.8, 0.5)]))
    panels.append(("BDIA", [(f"gamma={g}", rho_bdia(z, g)) for g in (1.0, 0.5, 0.1)]))
    panels.append(
        ("O-BELM / DDIM", [("O-BELM (leapfrog)", rho_belm(z)), ("DDIM (Euler)", np.abs(1 + z))])
    )
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    log("\nLinear stability: area of {rho <= 1 + 1e-9} in the box Re z in [-5, 1.5],")
    log("|Im z| <= 3.5 (grid cells), and the stability interval on the negative real axis")
    for ax, (title, curves) in zip(axes.flat, panels, strict=True):
        for (label, rho), color in zip(curves, colors, strict=False):
            stable = rho <= 1 + 1e-9
            ax.contourf(re, im, stable, levels=[0.5, 1.5], colors=[color], alpha=0.15)
            ax.contour(re, im, rho, levels=[1.0], colors=[color], linewidths=1.2)
            ax.plot([], [], color=color, label=label)
            cell = (re[0, 1] - re[0, 0]) * (im[1, 0] - im[0, 0])
            row = np.argmin(np.abs(im[:, 0]))
            neg = re[row] <= 0
            # The stable interval [left, 0] on the negative real axis (left = 0: none).
            left = 0.0
            for x, ok in zip(re[row][neg][::-1], stable[row][neg][::-1], strict=True):
                if not ok:
                    break
                left = x
            log(
                f"  {title:14s} {label:18s} area {stable.sum() * cell:7.2f}   "
                f"real interval [{left:.2f}, 0]"
            )
        ax.axhline(0, color="k", lw=0.5)
        ax.axvline(0, color="k", lw=0.5)
        ax.set_title(f"{title}: rho(M(z)) <= 1")
        ax.set_xlabel("Re z")
        ax.set_ylabel("Im z")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "stability_regions.png", dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- round trips

STEPS = (10, 30, 100, 300, 1000)


def methods():
    return [
        ("EDICT p=0.93", EDICT(0.93)),
        ("BDIA g=1", BDIA(1.0)),
        ("BDIA g=0.5", BDIA(0.5)),
        ("O-BELM", BELM()),
        ("Rex Euler data z=0.999", rx.Rex(diffrax.Euler(), "data", 0.999)),
        ("Rex Euler data z=0.9", rx.Rex(diffrax.Euler(), "data", 0.9)),
        ("Rex Euler data z=0.5", rx.Rex(diffrax.Euler(), "data", 0.5)),
        ("Rex RK4 data z=0.999", rx.Rex(rx.RK4(), "data", 0.999)),
        ("Rex Euler noise z=0.999", rx.Rex(diffrax.Euler(), "noise", 0.999)),
        ("Rex Euler noise z=0.5", rx.Rex(diffrax.Euler(), "noise", 0.5)),
    ]


def padded(schedule, n, dtype):
    ts = np.full(max(STEPS) + 1, 1e-3)
    ts[: n + 1] = np.asarray(rx.log_snr_grid(schedule, 1.0, 1e-3, n))
    return jnp.asarray(ts, dtype)


def round_trips(log):
    rows = []
    for dtype in (jnp.float64, jnp.float32):
        term, x0, _, _ = make_problem("gmm", dtype)
        dname = jnp.dtype(dtype).name
        t0 = time.time()
        for name, solver in methods():
            for n in STEPS:
                ts = padded(term.schedule, n, dtype)
                state = solver.init(term, ts[n], ts[0], x0, None)
                lat, lat_state = backward(term, solver, x0, state, ts, n)
                rec, _ = forward(term, solver, lat, lat_state, ts, n)
                err = rel(rec, x0)  # inf when it diverged
                rows.append(dict(dtype=dname, method=name, steps=n, rt_maxrel=err))
        log(f"round trips ({dname}) done in {time.time() - t0:.0f} s")
    for dname in ("float64", "float32"):
        log(f"\n[gmm, {dname}] round trip max rel. error vs steps")
        log(f"{'method':26s}" + "".join(f"{n:>10d}" for n in STEPS))
        for name, _ in methods():
            vals = {
                r["steps"]: r["rt_maxrel"]
                for r in rows
                if r["dtype"] == dname and r["method"] == name
            }
            log(f"{name:26s}" + "".join(f"{vals[n]:10.1e}" for n in STEPS))
    return rows


def plot_round_trips(rows, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, dname in zip(axes, ("float64", "float32"), strict=True):
        for name, _ in methods():
            pts = [
                (r["steps"], min(max(r["rt_maxrel"], 1e-17), 1e3))
                for r in rows
                if r["dtype"] == dname and r["method"] == name
            ]
            style = "-" if name.startswith("Rex") else "--"
            ax.loglog(*zip(*pts, strict=True), style, marker="o", ms=3, label=name)
        ax.set_title(f"Gaussian mixture, {dname}: round trip (max rel., capped at 1e3)")
        ax.set_xlabel("steps")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(out / "stability_roundtrip.png", dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []

    def log(msg=""):
        print(msg, flush=True)
        lines.append(msg)

    log(
        f"rexjax stability study, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{jax.devices()[0].platform.upper()}, {os.cpu_count()} cores, jax {jax.__version__}"
    )
    plot_regions(out, log)
    rows = round_trips(log)
    with open(out / "stability_roundtrip.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_round_trips(rows, out)
    (out / "stability_log.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
