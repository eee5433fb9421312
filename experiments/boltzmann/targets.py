r"""Boltzmann targets, flow-matching velocity models and metrics shared by the scripts in
`experiments/boltzmann/` (a folder of scripts, not a package: each script puts this folder and
`experiments/` on `sys.path`).

Energies are in kT units ($\tau = 1$); `log_prob` is the unnormalised $-E(x)$ and `log_z` the
log normaliser where it is known. Conventions (see `shared/research/boltzmann-brief.md` §1):

- **GMM-40** (D=2): fab-torch / iDEM's instance (`lollcat/fab-torch:fab/target_distributions/
  gmm.py`): 40 equal-weight Gaussians, means `(torch.rand(40, 2) - 0.5) * 2 * 40` after
  `torch.manual_seed(0)` (the float32 values are written out below), isotropic standard
  deviation softplus(1) = 1.3133. Normalised: log Z = 0. Exact samples.
- **Many-well-32** (D=32): fab-jax's `many_well.py`: 16 independent copies of
  $E(x_1, x_2) = x_1^4 - 6x_1^2 - \tfrac12x_1 + \tfrac12x_2^2$; log Z per copy =
  log 11784.50927 + ½ log 2π (checked here by quadrature). Exact samples: $x_1$ by rejection
  from the mixture 0.2 N(-1.7, 0.5²) + 0.8 N(1.7, 0.5²) (fab-jax's proposal; our envelope
  constant from a dense grid, with a 10 % margin), $x_2 \sim N(0, 1)$.
- **DW-4** (D=8, 4 particles in 2-D): Köhler et al. 2020 / EACF's
  `double_well.py`: $E = \tfrac1{2\tau}\sum_{i\neq j} [a(d_{ij}-d_0) + b(d_{ij}-d_0)^2 +
  c(d_{ij}-d_0)^4]$ with a=0, b=-4, c=0.9, d0=4, τ=1 (each unordered pair once). The energy
  is translation invariant, so the usual benchmark works in mean-free coordinates. To keep a
  non-degenerate density on R^8 (a flow on the full space, exact Jacobians) we add a standard
  Gaussian on the orthonormal centre-of-mass coordinate $c = \sqrt{n}\,\bar x$:
  $E_{\rm full} = E + \tfrac12\|c\|^2$. Its mean-free marginal is exactly the DW-4 benchmark;
  energy-W2 uses the DW-4 energy $E$ alone. log Z unknown; ground truth from MALA
  (`dw4_mcmc.py`).
"""

import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


HERE = Path(__file__).parent
MODELS = HERE / "models"
DATA = HERE / "data"

# fab-torch's GMM-40 means: (torch.rand(40, 2) - 0.5) * 2 * 40 after torch.manual_seed(0).
GMM40_MEANS = np.array([
    [-0.299473, 21.457745], [-32.921806, -29.437561], [-15.406175, 10.726295],
    [-0.792527, 31.71558], [-3.549762, 10.584502], [-12.088523, -7.862616],
    [-38.21394, -26.491283], [-16.488924, 1.481743], [15.813408, 24.000912],
    [-27.117643, -17.418514], [14.528685, 33.215519], [-8.232007, 29.93247],
    [-6.447334, 4.232564], [36.219048, -37.106815], [-25.181519, -10.12661],
    [-15.591998, 34.560032], [-25.927185, -18.413315], [-27.945618, -37.46244],
    [-23.349619, 34.383923], [17.848736, 19.386902], [2.103662, -20.507339],
    [6.767387, -37.34779], [-28.902649, -20.621201], [25.237518, 23.45285],
    [-17.739801, -1.443295], [25.582428, 39.765324], [15.875287, 5.403714],
    [26.819454, -23.552094], [7.453761, -31.01222], [-27.723446, -20.663342],
    [18.098923, 16.086416], [-23.694099, 12.084284], [21.958881, -5.048695],
    [1.527262, 9.268188], [24.815063, 38.407764], [-30.824944, -14.65879],
    [15.720396, 33.141975], [34.808292, 35.29427], [7.960582, -34.783306],
    [3.6797, -25.024214],
])  # fmt: skip
GMM40_STD = math.log1p(math.e)  # softplus(1)


class GMM40:
    """fab-torch's 40-mode Gaussian mixture in D=2 (normalised: log Z = 0)."""

    name = "gmm40"
    dim = 2
    scale = 20.0  # the model works in x / scale
    log_z = 0.0

    def component_log_probs(self, x):
        mu = jnp.asarray(GMM40_MEANS, x.dtype)
        d2 = jnp.sum((x[None, :] - mu) ** 2, axis=-1)
        return -0.5 * d2 / GMM40_STD**2 - math.log(2 * math.pi * GMM40_STD**2) - math.log(40)

    def log_prob(self, x):
        return jax.scipy.special.logsumexp(self.component_log_probs(x))

    def energy(self, x):
        return -self.log_prob(x)

    def sample(self, key, n):
        k1, k2 = jax.random.split(key)
        idx = jax.random.randint(k1, (n,), 0, 40)
        return jnp.asarray(GMM40_MEANS)[idx] + GMM40_STD * jax.random.normal(k2, (n, 2))

    def mode_weights(self, xs, weights=None):
        """Posterior-responsibility mode weights (SNIS-weighted if `weights` are given)."""
        resp = jax.nn.softmax(jax.vmap(self.component_log_probs)(xs), axis=-1)
        w = jnp.full(xs.shape[0], 1 / xs.shape[0]) if weights is None else weights
        return w @ resp

    def mode_tv(self, xs, weights=None):
        """Total variation between the mode weights and the uniform 1/40."""
        return 0.5 * float(jnp.sum(jnp.abs(self.mode_weights(xs, weights) - 1 / 40)))


def _double_well_x1_log_prob(x):
    return -(x**4) + 6 * x**2 + 0.5 * x


class ManyWell32:
    """fab-jax's many-well: 16 copies of a 2-D double well (D=32), exact log Z and samples."""

    name = "manywell32"
    dim = 32
    scale = 1.0
    num_pairs = 16

    def __init__(self):
        grid = np.linspace(-6, 6, 400001)
        dens = np.exp(_double_well_x1_log_prob(grid))
        dx = grid[1] - grid[0]
        self.z1 = float(np.sum(dens) * dx)  # 11784.50927...
        self.deep_fraction = float(np.sum(dens[grid > 0]) * dx / self.z1)
        self.log_z = self.num_pairs * (math.log(self.z1) + 0.5 * math.log(2 * math.pi))
        proposal = 0.2 * _normal_pdf(grid, -1.7, 0.5) + 0.8 * _normal_pdf(grid, 1.7, 0.5)
        self.envelope = 1.1 * float(np.max(dens / self.z1 / proposal))

    def log_prob(self, x):
        x1, x2 = x[0::2], x[1::2]
        return jnp.sum(_double_well_x1_log_prob(x1) - 0.5 * x2**2)

    def energy(self, x):
        return -self.log_prob(x)

    def sample(self, key, n):
        """Exact samples: rejection sampling for every x1 (numpy, float64)."""
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
        need = n * self.num_pairs
        out = np.empty(0)
        while out.size < need:
            m = 2 * need
            comp = rng.random(m) < 0.2
            prop = np.where(comp, -1.7, 1.7) + 0.5 * rng.standard_normal(m)
            g = 0.2 * _normal_pdf(prop, -1.7, 0.5) + 0.8 * _normal_pdf(prop, 1.7, 0.5)
            p = np.exp(_double_well_x1_log_prob(prop)) / self.z1
            accept = rng.random(m) * self.envelope * g < p
            out = np.concatenate([out, prop[accept]])
        x1 = out[:need].reshape(n, self.num_pairs)
        x2 = rng.standard_normal((n, self.num_pairs))
        return jnp.asarray(np.stack([x1, x2], axis=-1).reshape(n, self.dim))

    def deep_well_error(self, xs, weights=None):
        """Mean over the 16 pairs of |P(x1 > 0) - exact|, SNIS-weighted if `weights`."""
        w = jnp.full(xs.shape[0], 1 / xs.shape[0]) if weights is None else weights
        frac = w @ (xs[:, 0::2] > 0).astype(xs.dtype)
        return float(jnp.mean(jnp.abs(frac - self.deep_fraction)))


def _normal_pdf(x, mu, sd):
    return np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


class DW4:
    """Köhler et al.'s 4-particle double well in 2-D (D=8), plus a standard Gaussian on the
    centre-of-mass coordinate (module docstring)."""

    name = "dw4"
    dim = 8
    scale = 2.0
    n_particles = 4
    log_z = None

    def dw_energy(self, x):
        p = x.reshape(self.n_particles, 2)
        i, j = np.triu_indices(self.n_particles, 1)
        d = jnp.sqrt(jnp.sum((p[i] - p[j]) ** 2, axis=-1))
        u = d - 4.0
        return jnp.sum(-4.0 * u**2 + 0.9 * u**4)

    def energy(self, x):
        com = jnp.mean(x.reshape(self.n_particles, 2), axis=0) * math.sqrt(self.n_particles)
        return self.dw_energy(x) + 0.5 * jnp.sum(com**2)

    def log_prob(self, x):
        return -self.energy(x)

    def sample(self, key, n):
        """Samples from the committed MALA ground truth (`dw4_mcmc.py`), drawn with replacement
        when more are asked for than stored."""
        data = np.load(DATA / "dw4_mcmc.npy")
        idx = jax.random.choice(key, data.shape[0], (n,), replace=n > data.shape[0])
        return jnp.asarray(data)[idx]


TARGETS = {"gmm40": GMM40, "manywell32": ManyWell32, "dw4": DW4}


class Velocity(eqx.Module):
    """An MLP velocity field u(t, x) for flow matching (x in model units, t in [0, 1]).

    Input: x and Fourier features of t; `depth` hidden layers of `width`, SiLU.
    """

    mlp: eqx.nn.MLP
    freqs: jax.Array

    def __init__(self, dim, width=128, depth=3, *, key):
        self.freqs = jnp.arange(1, 5, dtype=float) * math.pi
        self.mlp = eqx.nn.MLP(dim + 9, dim, width, depth, activation=jax.nn.silu, key=key)

    def __call__(self, t, x, args=None):
        t = jnp.asarray(t, x.dtype)
        f = t * self.freqs.astype(x.dtype)
        feats = jnp.concatenate([x, t[None], jnp.sin(f), jnp.cos(f)])
        return self.mlp(feats)


def save_model(model, path):
    """The float32 leaves of an equinox module as a safetensors file."""
    from safetensors.numpy import save_file

    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))
    save_file({f"{i:03d}": np.asarray(v, np.float32) for i, v in enumerate(leaves)}, str(path))


def load_model(target, dtype=jnp.float64, path=None):
    """The committed velocity model of `target` (a `Velocity`), cast to `dtype`."""
    from safetensors.numpy import load_file

    path = MODELS / f"{target.name}.safetensors" if path is None else path
    stored = load_file(str(path))
    skeleton = Velocity(target.dim, key=jax.random.key(0))
    params, static = eqx.partition(skeleton, eqx.is_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    if len(leaves) != len(stored):
        raise ValueError(f"{path} has {len(stored)} arrays; the model needs {len(leaves)}.")
    new = [jnp.asarray(stored[f"{i:03d}"], dtype) for i in range(len(leaves))]
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, new), static)


class ScaledTarget:
    """A target seen in model units y = x / scale: log p_y(y) = log p_x(scale y) + D log scale."""

    def __init__(self, target):
        self.target = target
        self.dim = target.dim
        self.log_det = target.dim * math.log(target.scale)

    def log_prob(self, y):
        return self.target.log_prob(self.target.scale * y) + self.log_det


def w2_samples(a, b):
    """Exact W2 between two equal-size point clouds (assignment problem; scipy)."""
    from scipy.optimize import linear_sum_assignment

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cost = np.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(np.mean(cost[rows, cols])))
