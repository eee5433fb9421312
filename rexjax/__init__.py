"""rexjax: algebraically reversible exponential (Rex) solvers for diffusion models."""

from . import baselines as baselines
from ._adjoint import ReversibleAdjoint as ReversibleAdjoint
from ._brownian import (
    AbstractLawsonBrownianPath as AbstractLawsonBrownianPath,
    GridBrownianPath as GridBrownianPath,
    LawsonBrownianPath as LawsonBrownianPath,
    ReverseSDE as ReverseSDE,
)
from ._composition import (
    EES27x5 as EES27x5,
    suzuki_fractions as suzuki_fractions,
    symmetric_composition as symmetric_composition,
)
from ._diagnostics import (
    GAP_WARNING as GAP_WARNING,
    coupling_gap as coupling_gap,
    trajectory_gap as trajectory_gap,
)
from ._exact import ExactRex as ExactRex, ExactState as ExactState
from ._gmm import GaussianMixture as GaussianMixture
from ._inversion import (
    CouplingWarning as CouplingWarning,
    ReversibleState as ReversibleState,
    accepted_grid as accepted_grid,
    adaptive_grid as adaptive_grid,
    invert as invert,
    log_snr_grid as log_snr_grid,
    reverse_sde as reverse_sde,
    sample as sample,
)
from ._lawson import (
    LawsonNoise as LawsonNoise,
    LawsonVariables as LawsonVariables,
    NoiseTableau as NoiseTableau,
    lawson_increment as lawson_increment,
)
from ._likelihood import (
    discrete_log_det as discrete_log_det,
    discrete_log_prob as discrete_log_prob,
    divergence_solve as divergence_solve,
    divergence_term as divergence_term,
    flow_log_prob as flow_log_prob,
    kish_ess as kish_ess,
    log_importance_weights as log_importance_weights,
    log_normaliser as log_normaliser,
    rex_pair_log_det as rex_pair_log_det,
    sample_with_log_prob as sample_with_log_prob,
    self_normalised_weights as self_normalised_weights,
    standard_normal_log_prob as standard_normal_log_prob,
    w2_1d as w2_1d,
)
from ._reversible import (
    AbstractInvertibleSolver as AbstractInvertibleSolver,
    AbstractReversibleSolver as AbstractReversibleSolver,
    NearReversible as NearReversible,
    Princeps as Princeps,
    Rex as Rex,
)
from ._schedules import (
    AbstractSchedule as AbstractSchedule,
    CosineVPSchedule as CosineVPSchedule,
    CustomSchedule as CustomSchedule,
    DiscreteVPSchedule as DiscreteVPSchedule,
    FlowMatchingSchedule as FlowMatchingSchedule,
    LinearVPSchedule as LinearVPSchedule,
    ScaledLinearVPSchedule as ScaledLinearVPSchedule,
    VPSchedule as VPSchedule,
)
from ._symmetry import (
    antisymmetric_order as antisymmetric_order,
    classical_order as classical_order,
    rooted_trees as rooted_trees,
)
from ._tableaus import (
    EES25 as EES25,
    EES27 as EES27,
    RK4 as RK4,
    RK38 as RK38,
    SSPRK3 as SSPRK3,
    Fehlberg45 as Fehlberg45,
    ees25_tableau as ees25_tableau,
    ees27_tableau as ees27_tableau,
)
from ._term import DiffusionTerm as DiffusionTerm


__version__ = "0.1.0"
