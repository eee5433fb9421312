r"""Established inversion methods in the same interface as `rexjax.Rex`.

Each is a diffrax solver on a `rexjax.DiffusionTerm`, usable through `diffrax.diffeqsolve`,
`rexjax.sample` and `rexjax.invert`:

- `DDIM`: DDIM sampling with the naive (approximate) DDIM inversion.
- `EDICT`: exact inversion by two coupled DDIM sequences (Wallace et al. 2023).
- `BDIA`: exact inversion by bi-directional integration approximation (Zhang et al. 2024).
- `BELM`: O-BELM, the second-order exactly invertible linear multistep method (Wang et al. 2024).
- `DPMSolverPP`: DPM-Solver++(2M) (Lu et al. 2022), not invertible (naive inversion only).
"""

from ._bdia import BDIA as BDIA
from ._belm import BELM as BELM
from ._ddim import DDIM as DDIM
from ._dpmsolver import DPMSolverPP as DPMSolverPP
from ._edict import EDICT as EDICT
