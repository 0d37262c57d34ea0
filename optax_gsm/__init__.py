"""optax_gsm: Global Sparse Momentum pruning as optax transformations."""

import importlib as _importlib
import os as _os
import sys as _sys
import warnings as _warnings

from optax_gsm import checkpoint  # orbax is imported only when used
from optax_gsm._alias import gsm_sgd
from optax_gsm._gsm import GSMState
from optax_gsm._gsm import gsm
from optax_gsm._pool import default_prunable
from optax_gsm._pool import prunable_by_path
from optax_gsm._precision import Float32MasterState
from optax_gsm._precision import float32_master
from optax_gsm._pruning import HardPruneState
from optax_gsm._pruning import KeepMaskedState
from optax_gsm._pruning import LeafSparsity
from optax_gsm._pruning import SparsityReport
from optax_gsm._pruning import apply_masks
from optax_gsm._pruning import hard_prune_at
from optax_gsm._pruning import keep_masked
from optax_gsm._pruning import prune
from optax_gsm._pruning import sparsity_report
from optax_gsm._scores import magnitude_score
from optax_gsm._scores import taylor_score
from optax_gsm._selection import top_k_masks
from optax_gsm._version import __version__
from optax_gsm.baselines import GMPState
from optax_gsm.baselines import gmp
from optax_gsm.baselines import lottery_ticket
from optax_gsm.baselines import snip_masks
from optax_gsm.batchnorm import dead_filter_outputs
from optax_gsm.batchnorm import recalibrate_batch_stats
from optax_gsm.export import load_sparse
from optax_gsm.export import save_sparse
from optax_gsm.export import to_bcoo
from optax_gsm.metrics import gsm_metrics
from optax_gsm.schedules import checked_density_schedule
from optax_gsm.schedules import density_schedule
from optax_gsm.schedules import polynomial_density_schedule
from optax_gsm.structured import StructuredGSMState
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

__all__ = (
    "Float32MasterState",
    "GMPState",
    "GSMState",
    "HardPruneState",
    "KeepMaskedState",
    "LeafSparsity",
    "SparsityReport",
    "StructuredGSMState",
    "WeightMomState",
    "apply_masks",
    "checked_density_schedule",
    "checkpoint",
    "dead_filter_outputs",
    "default_prunable",
    "density_schedule",
    "float32_master",
    "gmp",
    "gsm",
    "gsm_metrics",
    "gsm_sgd",
    "hard_prune_at",
    "keep_masked",
    "load_sparse",
    "lottery_ticket",
    "magnitude_score",
    "passive_decay_exponent",
    "polynomial_density_schedule",
    "prunable_by_path",
    "prune",
    "prune_share",
    "recalibrate_batch_stats",
    "save_sparse",
    "shrink",
    "snip_masks",
    "sparsity_report",
    "structured_gsm",
    "structured_prune",
    "synflow",
    "synflow_objective",
    "taylor_score",
    "to_bcoo",
    "top_k_masks",
    "weight_decay_for",
    "weightmom",
)

# Names of 0.1 that moved: (module, attribute or None for the module, what to
# use instead). They still work, with a DeprecationWarning, until 0.3.
_DEPRECATED = {
    "CRITERIA": ("optax_gsm._scores", "CRITERIA",
                 'the strings "taylor" and "magnitude"'),
    "SELECTIONS": ("optax_gsm._selection", "SELECTIONS",
                   "the selection names in the docstring of gsm"),
    "ordered_key": ("optax_gsm._selection", "ordered_key", "top_k_masks"),
    "num_filters": ("optax_gsm.structured", "num_filters",
                    "structured_prune's report"),
    "sparse_arrays": ("optax_gsm.export", "sparse_arrays", "save_sparse"),
    "models": ("examples.common.models", None,
               "examples/common/models.py in the repository"),
    "datasets": ("examples.common.datasets", None,
                 "examples/common/datasets.py in the repository"),
    "sparse_mlp_apply": ("examples.common.models", "sparse_mlp_apply",
                         "examples/common/models.py in the repository"),
}


_WARNED = set()


def __getattr__(name):
  """Old names, with a DeprecationWarning that says what to use instead."""
  if name not in _DEPRECATED:
    raise AttributeError(f"module 'optax_gsm' has no attribute {name!r}")
  module_name, attribute, instead = _DEPRECATED[name]
  if name not in _WARNED:  # once per name
    _WARNED.add(name)
    _warnings.warn(
        f"optax_gsm.{name} is deprecated and will be removed in 0.3; use "
        f"{instead}.", DeprecationWarning, stacklevel=2)
  if module_name.startswith("examples."):
    # Example-side helpers live in the repository, beside this package.
    root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    if not _os.path.isdir(_os.path.join(root, "examples", "common")):
      raise AttributeError(
          f"optax_gsm.{name} moved to {instead}, which this installation "
          "does not contain (install from a clone of the repository).")
    if root not in _sys.path:
      _sys.path.append(root)
  value = _importlib.import_module(module_name)
  return value if attribute is None else getattr(value, attribute)


def __dir__():
  return sorted(__all__)
