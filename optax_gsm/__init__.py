"""optax_gsm: Global Sparse Momentum pruning as optax transformations."""

from optax_gsm._gsm import CRITERIA
from optax_gsm._gsm import GSMState
from optax_gsm._gsm import gsm
from optax_gsm._gsm import gsm_sgd
from optax_gsm._gsm import magnitude_score
from optax_gsm._gsm import taylor_score
from optax_gsm._pool import default_prunable
from optax_gsm._pruning import KeepMaskedState
from optax_gsm._pruning import LeafSparsity
from optax_gsm._pruning import SparsityReport
from optax_gsm._pruning import apply_masks
from optax_gsm._pruning import keep_masked
from optax_gsm._pruning import prune
from optax_gsm._pruning import sparsity_report
from optax_gsm._selection import SELECTIONS
from optax_gsm._selection import ordered_key
from optax_gsm._selection import top_k_masks

__version__ = "0.1.0"

__all__ = [
    "CRITERIA",
    "GSMState",
    "KeepMaskedState",
    "LeafSparsity",
    "SELECTIONS",
    "SparsityReport",
    "apply_masks",
    "default_prunable",
    "gsm",
    "gsm_sgd",
    "keep_masked",
    "magnitude_score",
    "ordered_key",
    "prune",
    "sparsity_report",
    "taylor_score",
    "top_k_masks",
]
