r"""The Fréchet distance between Gaussians fitted to two sets of features (Heusel et al. 2017's
FID, here in the digits classifier's features: "FD-digits").

$$\mathrm{FD} = \lVert\mu_1 - \mu_2\rVert^2 + \operatorname{tr}\Big(\Sigma_1 + \Sigma_2 -
2\big(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}\big)^{1/2}\Big),$$

computed in float64 with symmetric eigendecompositions (the trace term equals
$\operatorname{tr}((\Sigma_1\Sigma_2)^{1/2})$ and is real for positive semi-definite inputs).
"""

import numpy as np
from jaxtyping import Float


def feature_statistics(
    features: Float[np.ndarray, "n d"],
) -> tuple[Float[np.ndarray, " d"], Float[np.ndarray, "d d"]]:
    """The mean and the unbiased covariance of `features` `(n, d)`, in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"Expected features of shape (n, d) with n >= 2, got {f.shape}.")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mu1: Float[np.ndarray, " d"],
    sigma1: Float[np.ndarray, "d d"],
    mu2: Float[np.ndarray, " d"],
    sigma2: Float[np.ndarray, "d d"],
) -> float:
    """The Fréchet (2-Wasserstein) distance squared between `N(mu1, sigma1)` and
    `N(mu2, sigma2)` (see the module docstring)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root = _psd_sqrt(s1)
    middle = np.linalg.eigvalsh(root @ s2 @ root)
    trace = np.sum(np.sqrt(np.clip(middle, 0.0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace)
