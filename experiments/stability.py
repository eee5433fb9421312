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

3. Rex per base (Euler, Midpoint, Heun, RK4, Tsit5, Dopri5, EES25, EES27, EES27x5) and
   coupling (1, 0.999, 0.99, 0.9, 0.5): the McCallum–Foster step matrix on the base's
   stability function R, checked against `rexjax.Rex` steps on a linear model; the stable real
   interval and the regions against the base's own (which is NearReversible's).

Run: `python experiments/stability.py [--out DIR] [--parts regions,rex,roundtrips]`. Writes
`results/stability_regions.png`, `results/stability_roundtrip.{csv,png}`,
`results/stability_log.txt` and (part rex) `results/stability_rex{.md,_intervals.csv,
_regions.png}`.
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

from common import markdown_table, pyplot, write_csv, write_markdown  # noqa: E402


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


# ----------------------------------------------------------------------------- Rex per base

REX_COUPLINGS = (1.0, 0.999, 0.99, 0.9, 0.5)


def rex_bases():
    return [
        ("Euler", diffrax.Euler()),
        ("Midpoint", diffrax.Midpoint()),
        ("Heun", diffrax.Heun()),
        ("RK4", rx.RK4()),
        ("Tsit5", diffrax.Tsit5()),
        ("Dopri5", diffrax.Dopri5()),
        ("EES25", rx.EES25()),
        ("EES27", rx.EES27()),
        ("EES27x5", rx.EES27x5()),
    ]


def rex_matrix(w, r, zeta):
    """The McCallum–Foster step matrix of Rex on Y' = (w/h) Y, acting on (Y, Yh):
    M(w) = [[zeta, R(w) - zeta], [zeta (1 - R(-w)), 1 + (1 - R(-w)) (R(w) - zeta)]]."""
    rw, rmw = r(w), r(-w)
    entries = [zeta + 0 * rw, rw - zeta, zeta * (1 - rmw), 1 + (1 - rmw) * (rw - zeta)]
    return np.stack(entries).reshape(2, 2, *rw.shape)


def real_interval(rho, ws):
    """The connected stable interval [left, 0] of rho(w) <= 1 on the negative real axis
    (`ws` decreasing from 0)."""
    left = 0.0
    for w, value in zip(ws, rho, strict=True):
        if value > 1 + 1e-12:
            break
        left = w
    return left


def numerical_step_matrix(base, zeta, w):
    """M(w) measured by one `rexjax.Rex` step (data prediction, float64) on a model whose
    Lawson-transformed drift is linear, dY/dv = a Y with Y = x/sigma and v = alpha/sigma (the
    model predicts x0 = a x / sigma): the images of (x, xh) = (sigma, 0) and (0, sigma)."""
    schedule = rx.VPSchedule.linear()
    a, h = -4.0, -w / 4.0  # w = a h
    t0 = schedule.t_from_log_snr(jnp.log(2.0))
    t1 = schedule.t_from_log_snr(jnp.log(2.0 + h))
    term = rx.DiffusionTerm(lambda t, x, args: a * x / schedule.sigma(t), schedule, "data")
    solver = rx.Rex(base, "data", zeta)
    s0, s1 = schedule.sigma(t0), schedule.sigma(t1)
    cols = []
    for y, yh in ((s0, 0.0 * s0), (0.0 * s0, s0)):
        y1, _, _, yh1, _ = solver.step(
            term, t0, t1, jnp.asarray([y]), None, jnp.asarray([yh]), False
        )
        cols.append([float(y1[0] / s1), float(yh1[0] / s1)])
    return np.array(cols).T


def rex_linear_study(out, log):
    """Stable real intervals and regions of Rex per base and coupling (CSV, PNG, markdown),
    with the closed-form step matrix checked against `rexjax.Rex` steps."""
    worst = 0.0
    for _, base in rex_bases():
        r = stability_function(base)
        for zeta in (1.0, 0.9):
            for w in (-0.7, -0.1, 0.3):
                m_num = numerical_step_matrix(base, zeta, w)
                m_ref = rex_matrix(np.asarray(w), r, zeta).real
                worst = max(worst, float(np.max(np.abs(m_num - m_ref))))
    log(f"\nRex step matrix: closed form vs rexjax.Rex steps, max |difference| {worst:.1e}")
    if worst > 1e-10:
        raise RuntimeError("The Rex step matrix disagrees with rexjax.Rex.")
    ws = -np.linspace(0, 12, 120001)
    rows = []
    for name, base in rex_bases():
        r = stability_function(base)
        base_left = real_interval(np.abs(r(ws)), ws)
        rows.append(
            dict(
                base=name,
                solver="base / NearReversible",
                coupling=float("nan"),
                real_interval=base_left,
            )
        )
        for zeta in REX_COUPLINGS:
            m = rex_matrix(ws, r, zeta)
            rho = spectral_radius(m[0, 0], m[0, 1], m[1, 0], m[1, 1])
            rows.append(
                dict(base=name, solver="Rex", coupling=zeta, real_interval=real_interval(rho, ws))
            )
    write_csv(rows, out / "stability_rex_intervals.csv")
    table = []
    for name, _ in rex_bases():
        sel = [r for r in rows if r["base"] == name]
        table.append([name, *[f"[{r['real_interval']:.3g}, 0]" for r in sel]])
    headers = ["base", "base / NearReversible", *[f"Rex ζ={z:g}" for z in REX_COUPLINGS]]
    md = markdown_table(table, headers)
    log("\nStable real interval [w, 0] of y' = (w/h) y (connected to 0)\n" + md)
    write_markdown(
        out / "stability_rex.md",
        "Linear stability of Rex per base and coupling",
        [
            (
                "Method",
                "Test equation dY/dv = lam Y in the Lawson variables, w = h lam. Rex's step "
                "matrix on (Y, Yh) is M(w) = [[ζ, R(w) − ζ], [ζ(1 − R(−w)), "
                "1 + (1 − R(−w))(R(w) − ζ)]] "
                "with R the base's stability function; det M = ζ. Checked against one `rexjax.Rex` "
                f"step on a linear model (max |difference| {worst:.1e}). NearReversible (and "
                "Princeps) step with the base alone: their region is the base's {|R(w)| <= 1}.",
            ),
            ("Stable real interval (connected to 0)", md),
            (
                "Reading",
                "Every base loses its real interval under the coupling: for ζ near 1 "
                "Rex is stable only on about [ln ζ, 0] (the parasitic eigenvalue ≈ ζ/R(w) grows "
                "by about ζ e^{|w|} a step); the base's own interval (and NearReversible's) is "
                "several units long. Effectively symmetric bases do not enlarge the interval; "
                "they reduce how strongly the parasitic mode is excited (see coarse_steps.md).",
            ),
        ],
    )
    plot_rex_regions(out)


def plot_rex_regions(out):
    plt = pyplot()
    if plt is None:
        return
    re, im = np.meshgrid(np.linspace(-5, 1.5, 391), np.linspace(-4, 4, 481))
    z = re + 1j * im
    fig, axes = plt.subplots(3, 3, figsize=(15, 13), layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (name, base) in zip(axes.flat, rex_bases(), strict=True):
        r = stability_function(base)
        curves = [("base / NearRev", np.abs(r(z)))]
        for zeta in REX_COUPLINGS:
            m = rex_matrix(z, r, zeta)
            curves.append((f"Rex ζ={zeta:g}", spectral_radius(m[0, 0], m[0, 1], m[1, 0], m[1, 1])))
        for (label, rho), color in zip(curves, ["k", *colors], strict=False):
            stable = rho <= 1 + 1e-9
            ax.contourf(re, im, stable, levels=[0.5, 1.5], colors=[color], alpha=0.12)
            ax.contour(re, im, rho, levels=[1.0], colors=[color], linewidths=1.2)
            ax.plot([], [], color=color, label=label)
        ax.axhline(0, color="k", lw=0.5)
        ax.axvline(0, color="k", lw=0.5)
        ax.set_title(f"{name}: stable where spectral radius <= 1")
        ax.set_xlabel("Re w")
        ax.set_ylabel("Im w")
    axes[0, 0].legend(fontsize=8, loc="upper left")
    fig.savefig(out / "stability_rex_regions.png", dpi=90)
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
    parser.add_argument(
        "--parts",
        default="regions,rex,roundtrips",
        help="comma-separated: regions (baselines), rex (per base and coupling), roundtrips",
    )
    args = parser.parse_args()
    parts = args.parts.split(",")
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
    if "regions" in parts:
        plot_regions(out, log)
    if "rex" in parts:
        rex_linear_study(out, log)
    if "roundtrips" in parts:
        rows = round_trips(log)
        with open(out / "stability_roundtrip.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plot_round_trips(rows, out)
    name = (
        "stability_log.txt"
        if parts == ["regions", "rex", "roundtrips"]
        else "stability_rex_log.txt"
    )
    (out / name).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
