"""optax_gsm: Global Sparse Momentum pruning as optax transformations."""

from optax_gsm import checkpoint  # orbax is imported only when used
from optax_gsm import datasets
from optax_gsm import models
from optax_gsm._gsm import CRITERIA
from optax_gsm._gsm import GSMState
from optax_gsm._gsm import gsm
from optax_gsm._gsm import gsm_sgd
from optax_gsm._gsm import magnitude_score
from optax_gsm._gsm import taylor_score
from optax_gsm._pool import default_prunable
from optax_gsm._pruning import HardPruneState
from optax_gsm._pruning import KeepMaskedState
from optax_gsm._pruning import LeafSparsity
from optax_gsm._pruning import SparsityReport
from optax_gsm._pruning import apply_masks
from optax_gsm._pruning import hard_prune_at
from optax_gsm._pruning import keep_masked
from optax_gsm._pruning import prune
from optax_gsm._pruning import sparsity_report
from optax_gsm._selection import SELECTIONS
from optax_gsm._selection import ordered_key
from optax_gsm._selection import top_k_masks
from optax_gsm.baselines import GMPState
from optax_gsm.baselines import gmp
from optax_gsm.baselines import lottery_ticket
from optax_gsm.baselines import snip_masks
from optax_gsm.export import load_sparse
from optax_gsm.export import save_sparse
from optax_gsm.export import sparse_arrays
from optax_gsm.export import sparse_mlp_apply
from optax_gsm.export import to_bcoo
from optax_gsm.metrics import gsm_metrics
from optax_gsm.schedules import checked_density_schedule
from optax_gsm.schedules import density_schedule
from optax_gsm.schedules import polynomial_density_schedule
from optax_gsm.structured import StructuredGSMState
from optax_gsm.structured import num_filters
from optax_gsm.structured import shrink
from optax_gsm.structured import structured_gsm
from optax_gsm.structured import structured_prune
from optax_gsm.synflow import synflow
from optax_gsm.synflow import synflow_objective
from optax_gsm.tuning import passive_decay_exponent
from optax_gsm.tuning import prune_share
from optax_gsm.tuning import weight_decay_for
from optax_gsm.weightmom import WeightMomState
from optax_gsm.weightmom import weightmom

__version__ = "0.1.0"

__all__ = [
    # GSM
    "CRITERIA",
    "GSMState",
    "SELECTIONS",
    "gsm",
    "gsm_sgd",
    "magnitude_score",
    "taylor_score",
    "default_prunable",
    "ordered_key",
    "top_k_masks",
    # Pruning, masks and reports
    "HardPruneState",
    "KeepMaskedState",
    "LeafSparsity",
    "SparsityReport",
    "apply_masks",
    "hard_prune_at",
    "keep_masked",
    "prune",
    "sparsity_report",
    # Hyperparameters and logging
    "gsm_metrics",
    "passive_decay_exponent",
    "prune_share",
    "weight_decay_for",
    # Methods users compare GSM with
    "GMPState",
    "WeightMomState",
    "gmp",
    "lottery_ticket",
    "polynomial_density_schedule",
    "snip_masks",
    "synflow",
    "synflow_objective",
    "weightmom",
    # Schedules, structured GSM, export
    "StructuredGSMState",
    "checked_density_schedule",
    "density_schedule",
    "load_sparse",
    "num_filters",
    "save_sparse",
    "shrink",
    "sparse_arrays",
    "sparse_mlp_apply",
    "structured_gsm",
    "structured_prune",
    "to_bcoo",
    # Modules
    "checkpoint",
    "datasets",
    "models",
]
