"""The digits studies (experiments/digits_*.py) run end to end in their --quick settings, in
this process (so that they share compiled loops), and measure what they claim; the loops they
share agree with `rexjax.sample` / `rexjax.invert`."""

import csv
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest


EXPERIMENTS = Path(__file__).parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))
pretrained = pytest.importorskip("rexjax.models.pretrained")

import digits_solvers as ds  # noqa: E402

import rexjax as rx  # noqa: E402


def _run(module_name, tmp_path, monkeypatch, *extra):
    module = __import__(module_name)
    monkeypatch.setattr(sys, "argv", [module_name, "--quick", "--out", str(tmp_path), *extra])
    module.main()
    with open(tmp_path / f"{module_name}.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # suite time (`pytest -m slow`): ~50 s; every study run
# repeats this check at start-up
def test_loops_match_rexjax_sample_and_invert():
    term = ds.load_term(None, jnp.float64)
    x, y = pretrained.digits_test_split()
    x, y = jnp.asarray(x[:2], jnp.float64), jnp.asarray(y[:2])
    n = 3
    ts = jnp.asarray(ds.grid(term.schedule, n, dtype=jnp.float64))
    m = ds.pick("Rex Euler")[0]
    lat, state = ds.invert_loop(m, term, x, ts, n, y)
    ref = rx.invert(term, m.solver, x, ts[: n + 1], y)
    np.testing.assert_allclose(lat, ref.y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(state, ref.solver_state, rtol=0, atol=1e-12)
    back, _ = ds.sample_loop(m, term, lat, ts, n, y, state=state)
    np.testing.assert_allclose(back, x, rtol=0, atol=1e-9)  # exact inversion, float64


@pytest.mark.slow  # minutes on 2 cores: `python -m pytest -m slow`
def test_generation_quick(tmp_path, monkeypatch):
    rows = _run("digits_generation", tmp_path, monkeypatch)
    floor = rows[0]
    assert floor["method"].startswith("test split") and float(floor["fd"]) >= 0
    cells = rows[1:]
    assert {(r["method"], r["steps"]) for r in cells} == {("DDIM", "3")}
    for r in cells:
        assert 0 <= float(r["accuracy"]) <= 1 and float(r["fd"]) > 0
        assert 0 <= float(r["precision"]) <= 1 and 0 <= float(r["coverage"]) <= 1
    assert (tmp_path / "digits_generation.md").exists()
    assert (tmp_path / "digits_generation.png").exists()


@pytest.mark.slow
def test_reconstruction_quick(tmp_path, monkeypatch):
    rows = _run("digits_reconstruction", tmp_path, monkeypatch)
    by = {r["method"]: r for r in rows}
    assert float(by["Rex Euler"]["rt_mse"]) < 1e-8  # exact inversion (float32)
    assert float(by["DDIM"]["rt_mse"]) > 100 * float(by["Rex Euler"]["rt_mse"])
    assert np.isfinite(float(by["Rex Euler"]["latent_rel"]))


@pytest.mark.slow
def test_editing_quick(tmp_path, monkeypatch):
    rows = _run("digits_editing", tmp_path, monkeypatch)
    for r in rows:
        assert 0 <= float(r["edit_success"]) <= 1 and -1 <= float(r["ssim"]) <= 1
    rex = [r for r in rows if r["method"] == "Rex Euler"]
    assert all(float(r["roundtrip_mse"]) < 1e-8 for r in rex)
    assert (tmp_path / "digits_editing_examples.png").exists()


@pytest.mark.slow
def test_interpolation_quick(tmp_path, monkeypatch):
    rows = _run("digits_interpolation", tmp_path, monkeypatch)
    by = {r["method"]: r for r in rows}
    assert float(by["Rex Euler"]["endpoint_mse"]) < 1e-8
    assert 0 < float(by["O-BELM"]["confidence"]) <= 1
    assert (tmp_path / "digits_interpolation_grid.png").exists()


@pytest.mark.slow
def test_ablation_quick(tmp_path, monkeypatch):
    rows = _run("digits_ablation", tmp_path, monkeypatch)
    by = {(r["variant"], r["steps"]): r for r in rows}
    # The coupled variants invert at the float32 floor. Without the reparameterisation the
    # latents explode (RMS ~1e6 at 3 steps; its float64 round trip is 4e-20, so the algebra is
    # exact) and float32 loses the round trip. (Full Rex with Midpoint separates at 2-3 steps
    # too, latent RMS ~1e3, but less.)
    for v in ("Rex Midpoint (full)", "no exponential (coupled RK on x, in t)"):
        assert float(by[v, "3"]["rt_mse"]) < 1e-6, v
    assert float(by["no exponential (coupled RK on x, in t)", "3"]["latent_rms"]) < 10
    no_rep = float(by["no reparameterisation (Lawson, RK in t)", "3"]["latent_rms"])
    assert no_rep > 100 * float(by["Rex Midpoint (full)", "3"]["latent_rms"])
    assert float(by["no coupling (Princeps)", "3"]["rt_mse"]) > 1e-6


def test_resumed_runs_keep_the_earlier_log(tmp_path):
    """`--resume` appends to a study's log instead of replacing what the first run wrote."""
    import common

    first, second = common.Log(), common.Log()
    first("first run: cells A")
    second("resumed run: cells B")
    path = tmp_path / "study_log.txt"
    first.save(path)
    second.save(path, append=True)
    text = path.read_text()
    assert text.index("cells A") < text.index("--- resumed ---") < text.index("cells B")
    second.save(path)  # a fresh run replaces it
    assert "cells A" not in path.read_text()
