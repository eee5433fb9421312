"""The digits metrics (experiments/digits_eval.py) on sets with known answers."""

import sys
from pathlib import Path

import numpy as np
import pytest


sys.path.insert(0, str(Path(__file__).parents[1] / "experiments"))
import digits_eval as de  # noqa: E402


def _points(n=200, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_fd_of_a_set_against_itself_is_zero():
    x = _points() @ np.random.default_rng(1).normal(size=(6, 6))  # correlated features
    s = de.feature_stats(x)
    assert abs(de.frechet_distance(s, s)) < 1e-10


def test_fd_known_values():
    d = 4
    mean_a, mean_b = np.zeros(d), np.arange(d, dtype=float)
    std_a, std_b = np.array([1.0, 2.0, 0.5, 1.5]), np.array([2.0, 1.0, 0.5, 3.0])
    a, b = de.Stats(mean_a, np.diag(std_a**2)), de.Stats(mean_b, np.diag(std_b**2))
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((std_a - std_b) ** 2)
    assert de.frechet_distance(a, b) == pytest.approx(expected, rel=1e-12)
    assert de.frechet_distance(b, a) == pytest.approx(expected, rel=1e-12)
    # Commuting (same eigenvectors) non-diagonal covariances: the same formula after a rotation.
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(d, d)))
    a_rot = de.Stats(q @ mean_a, q @ a.cov @ q.T)
    b_rot = de.Stats(q @ mean_b, q @ b.cov @ q.T)
    assert de.frechet_distance(a_rot, b_rot) == pytest.approx(expected, rel=1e-10)


def test_fd_shift_of_a_sample():
    x = _points(500)
    shift = np.array([0.3, 0, 0, -0.4, 0, 0])
    assert de.frechet_distance(de.feature_stats(x), de.feature_stats(x + shift)) == pytest.approx(
        0.25, rel=1e-9
    )


def test_prdc_identical_sets():
    x = _points()
    out = de.prdc(x, x, k=5)
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["coverage"] == 1.0
    # Each real ball holds its centre and its 5 nearest neighbours (no ties): density (k+1)/k.
    assert out["density"] == pytest.approx(6 / 5, rel=1e-12)


def test_prdc_disjoint_and_collapsed_sets():
    real = _points()
    far = _points(seed=3) + 100.0
    out = de.prdc(real, far, k=5)
    assert out == dict(precision=0.0, recall=0.0, density=0.0, coverage=0.0)
    # Mode collapse: every fake point at one real point -> precision 1, coverage and recall low.
    collapsed = np.repeat(real[:1], 50, axis=0) + 1e-9 * _points(50, seed=4)
    out = de.prdc(real, collapsed, k=5)
    assert out["precision"] == 1.0
    # Coverage: the real balls that contain real[0] (brute force), a few of 200.
    d = np.linalg.norm(real[:, None] - real[None], axis=-1)
    radius = np.sort(d, axis=1)[:, 5]  # column 0 is the point itself
    assert out["coverage"] == pytest.approx(np.mean(d[:, 0] <= radius)) and out["coverage"] < 0.1
    assert out["recall"] <= 1 / 200 + 1e-12


def test_prdc_hand_computed():
    # 1-D, k=1: real radii are the distances to the nearest other real point.
    real = np.array([[0.0], [1.0], [3.0]])  # radii 1, 1, 2
    fake = np.array([[0.5], [2.5], [10.0]])  # fake radii 2, 2, 7.5
    out = de.prdc(real, fake, k=1)
    # 0.5 is in B(0,1) and B(1,1); 2.5 is in B(3,2); 10 in none.
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["density"] == pytest.approx(3 / 3)
    assert out["coverage"] == pytest.approx(1.0)
    # Real 0 and 1 are within 2 of 0.5, and 3 within 2 of 2.5.
    assert out["recall"] == pytest.approx(1.0)


def test_ssim_identity_and_constants():
    x = np.random.default_rng(0).uniform(-1, 1, size=(3, 1, 16, 16))
    np.testing.assert_allclose(de.ssim(x, x), 1.0, rtol=0, atol=1e-12)
    c1, c2 = 0.2, -0.5
    a, b = np.full((1, 1, 16, 16), c1), np.full((1, 1, 16, 16), c2)
    k1 = (0.01 * 2) ** 2
    expected = (2 * c1 * c2 + k1) / (c1**2 + c2**2 + k1)  # contrast-structure term is 1
    assert de.ssim(a, b)[0] == pytest.approx(expected, rel=1e-12)


def test_ssim_known_structure_and_ordering():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(1, 16, 16))
    noise = rng.normal(size=x.shape)
    s = [de.ssim(x, x + a * noise)[0] for a in (0.01, 0.1, 0.5)]
    assert 1 > s[0] > s[1] > s[2]
    # Symmetric in its arguments.
    assert de.ssim(x, x + 0.1 * noise)[0] == pytest.approx(de.ssim(x + 0.1 * noise, x)[0])
    # Against a direct per-window loop.
    y = x + 0.3 * noise
    w = de.gaussian_window()
    c1, c2 = (0.02) ** 2, (0.06) ** 2
    vals = []
    for i in range(10):
        for j in range(10):
            px, py = x[0, i : i + 7, j : j + 7], y[0, i : i + 7, j : j + 7]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            vals.append(
                (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            )
    assert de.ssim(x, y)[0] == pytest.approx(np.mean(vals), rel=1e-10)


def test_mse_accuracy_confidence():
    x = np.zeros((2, 1, 4, 4))
    y = x.copy()
    y[1] += 0.5
    np.testing.assert_allclose(de.mse(x, y), [0.0, 0.25])
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 3.0 + 1e-9]])
    assert de.class_accuracy(logits, np.array([0, 1, 1])) == 1.0
    p = de.confidence(logits, np.array([0, 1, 0]))
    assert p[0] == pytest.approx(np.exp(2) / (np.exp(2) + 1)) and p[2] == pytest.approx(0.5)
