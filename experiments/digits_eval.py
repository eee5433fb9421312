r"""Metrics for the digits studies: class accuracy, FD-digits, precision / recall / density /
coverage, SSIM and MSE. Shared by `experiments/digits_*.py`; `rexjax` never imports it.

All feature-space metrics use the built-in digit classifier
(`rexjax.models.pretrained.digits_classifier()`): its logits for class accuracy and its
penultimate features for the Fréchet distance ("FD-digits", the analogue of FD-DINOv2 /
FID) and for the k-nearest-neighbour metrics of Naeem et al. (2020). Reference statistics come
from the held-out test split (`digits_test_split()`), which the diffusion model never saw.

Everything is computed in float64 NumPy from float32 network outputs.

??? cite "References"

    Heusel et al., "GANs trained by a two time-scale update rule converge to a local Nash
    equilibrium" (the Fréchet distance), NeurIPS 2017. Naeem, Oh, Uh, Choi & Yoo, "Reliable
    fidelity and diversity metrics for generative models", ICML 2020. Wang, Bovik, Sheikh &
    Simoncelli, "Image quality assessment: from error visibility to structural similarity",
    IEEE TIP 2004.
"""

from typing import NamedTuple

import numpy as np

from rexjax.models import pretrained


# ----------------------------------------------------------------------------- classifier


def batched(fn, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """`fn` over the leading axis of `x` in batches (bounded memory), as float64 NumPy."""
    parts = [np.asarray(fn(x[i : i + batch]), np.float64) for i in range(0, len(x), batch)]
    return np.concatenate(parts)


def class_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of images whose arg-max class is `labels`."""
    return float(np.mean(np.argmax(logits, -1) == np.asarray(labels)))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from logits (last axis)."""
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The classifier's softmax probability of `labels`, per image."""
    return softmax(logits)[np.arange(len(logits)), np.asarray(labels)]


# ----------------------------------------------------------------------------- Fréchet distance


class Stats(NamedTuple):
    """Mean and covariance of a set of features (`np.cov` normalisation, n - 1)."""

    mean: np.ndarray
    cov: np.ndarray


def feature_stats(features: np.ndarray) -> Stats:
    return Stats(*pretrained.feature_statistics(features))


def frechet_distance(a: Stats, b: Stats) -> float:
    r"""$\|\mu_a - \mu_b\|^2 + \operatorname{tr}(\Sigma_a + \Sigma_b - 2(\Sigma_a^{1/2}
    \Sigma_b \Sigma_a^{1/2})^{1/2})$, the Fréchet (2-Wasserstein) distance between the
    Gaussians with these statistics: `rexjax.models.pretrained.frechet_distance` (symmetric
    eigendecompositions, so the result is real and, for `a == b`, zero to round-off)."""
    return pretrained.frechet_distance(a.mean, a.cov, b.mean, b.cov)


# ----------------------------------------------------------------------------- PRDC


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.clip(d2, 0, None))


def _knn_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest neighbour in the same set (itself
    excluded)."""
    if x.shape[0] <= k:
        raise ValueError(f"k-NN radii need more than k={k} points; got {x.shape[0]}.")
    d = _pairwise(x, x)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    r"""Precision, recall, density and coverage (Naeem et al. 2020) of `fake` against `real`
    features, with k-nearest-neighbour balls of radius $r_k$:

    - precision: the fraction of fake points inside some real ball $B(R_i, r_k(R_i))$;
    - recall: the fraction of real points inside some fake ball $B(F_j, r_k(F_j))$;
    - density: $\frac{1}{kM}\sum_j \#\{i : F_j \in B(R_i, r_k(R_i))\}$ (can exceed 1; equals
      $(k+1)/k$ for `fake == real` without ties);
    - coverage: the fraction of real balls that contain at least one fake point.
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    r_real, r_fake = _knn_radius(real, k), _knn_radius(fake, k)
    d = _pairwise(real, fake)  # (N real, M fake)
    inside_real = d <= r_real[:, None]
    return dict(
        precision=float(inside_real.any(0).mean()),
        recall=float((d <= r_fake[None, :]).any(1).mean()),
        density=float(inside_real.sum() / (k * fake.shape[0])),
        coverage=float(inside_real.any(1).mean()),
    )


# ----------------------------------------------------------------------------- SSIM, MSE


def gaussian_window(size: int = 7, std: float = 1.5) -> np.ndarray:
    """A normalised `size` x `size` Gaussian window."""
    g = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / std) ** 2)
    w = np.outer(g, g)
    return w / w.sum()


def _filter(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Valid 2-D correlation of `x` (..., H, W) with the window `w`."""
    k = w.shape[0]
    h, wd = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    out = np.zeros(x.shape[:-2] + (h, wd))
    for i in range(k):
        for j in range(k):
            out += w[i, j] * x[..., i : i + h, j : j + wd]
    return out


def ssim(
    x: np.ndarray, y: np.ndarray, data_range: float = 2.0, size: int = 7, std: float = 1.5
) -> np.ndarray:
    r"""Structural similarity (Wang et al. 2004) per image, Gaussian-windowed.

    $\mathrm{SSIM} = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}{(\mu_x^2 + \mu_y^2 +
    C_1)(\sigma_x^2 + \sigma_y^2 + C_2)}$ with local statistics under a `size` x `size`
    Gaussian window of standard deviation `std` (7 x 7, 1.5 px: the usual 11 x 11 window would
    leave a 6 x 6 map of a 16 x 16 digit), $C_1 = (0.01 L)^2$, $C_2 = (0.03 L)^2$, $L$ the
    data range (2 for pixels in [-1, 1]); averaged over the valid positions and the channels.

    **Arguments:** `x`, `y`: images (n, c, h, w) or (n, h, w).

    **Returns:** the SSIM of each pair, shape (n,).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim < 3:
        raise ValueError(
            f"ssim needs two (n, [c,] h, w) arrays of one shape; got {x.shape}, {y.shape}."
        )
    w = gaussian_window(size, std)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _filter(x, w), _filter(y, w)
    vx = _filter(x * x, w) - mx * mx
    vy = _filter(y * y, w) - my * my
    cxy = _filter(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(s.shape[0], -1).mean(1)


def mse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean squared error per image."""
    d = np.asarray(x, np.float64) - np.asarray(y, np.float64)
    return (d * d).reshape(d.shape[0], -1).mean(1)


# ----------------------------------------------------------------------------- all at once


class Evaluator:
    """The classifier's metrics of image sets against the test split.

    **Arguments:**

    - `classifier`: an object with `.logits(x)` and `.features(x)` on (n, 1, 16, 16) images
        (the built-in `digits_classifier()`).
    - `reference`: the reference images (the test split).
    - `k`: neighbours for PRDC.
    """

    def __init__(self, classifier, reference: np.ndarray, k: int = 5):
        self.classifier, self.k = classifier, k
        self.ref_features = self.features(reference)
        self.ref_stats = feature_stats(self.ref_features)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return batched(self.classifier.logits, np.asarray(x, np.float32))

    def features(self, x: np.ndarray) -> np.ndarray:
        return batched(self.classifier.features, np.asarray(x, np.float32))

    def fd(self, x: np.ndarray) -> float:
        """FD-digits of a set of images against the reference."""
        return frechet_distance(feature_stats(self.features(x)), self.ref_stats)

    def generation(self, x: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """FD-digits, PRDC and class accuracy of samples `x` drawn for `labels`. Non-finite
        samples are counted (`frac_nonfinite`) and the metrics are NaN if any occur."""
        x = np.asarray(x)
        finite = np.isfinite(x.reshape(len(x), -1)).all(1)
        out = dict(frac_nonfinite=float(1 - finite.mean()))
        if not finite.all():
            nan = float("nan")
            return out | dict(
                fd=nan, precision=nan, recall=nan, density=nan, coverage=nan, accuracy=nan
            )
        f = self.features(x)
        out["fd"] = frechet_distance(feature_stats(f), self.ref_stats)
        out |= prdc(self.ref_features, f, self.k)
        out["accuracy"] = class_accuracy(self.logits(x), labels)
        return out
