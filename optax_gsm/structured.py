"""Structured GSM: whole filters (output channels) compete for the top Q.

A filter is one output channel of a Flax kernel: the slice ``kernel[..., c]``
over every axis but the last (a column of a ``Dense`` kernel, one ``HWIO``
filter of a ``Conv``). Its score is the sum of its entries' scores, by
default the Taylor importance :math:`\\sum |g \\odot w|`; the top Q filters
over the whole pool are kept (:func:`optax_gsm.top_k_masks` on the
per-filter scores). :func:`shrink` then removes the pruned filters from a
the MLP and LeNet-5 of ``examples/common`` and
returns a smaller dense model with the same outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import flax.core
import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_gsm import _gsm
from optax_gsm import _jit
from optax_gsm import _paths
from optax_gsm import _pool
from optax_gsm import _scores
from optax_gsm import _selection


class StructuredGSMState(NamedTuple):
  """State of :func:`structured_gsm`."""
  count: jax.Array  # shape (), int32: updates so far
  active: Any  # per pooled leaf: uint32 count of active filters


def _check_output_axes(params: Any, flags: list[bool], where: str) -> None:
  for (path, leaf), flag in zip(
      jax.tree_util.tree_flatten_with_path(params)[0], flags):
    if flag and jnp.ndim(leaf) < 2:
      raise ValueError(
          f"{where}: pooled leaf {jax.tree_util.keystr(path)} has shape "
          f"{jnp.shape(leaf)}; structured pruning needs kernels with an input "
          "and an output axis (ndim >= 2, output channels last). Leave 1-D "
          "and scalar leaves out of prunable.")


REDUCTIONS = ("sum", "mean")


def _check_reduction(reduction: str) -> None:
  if reduction not in REDUCTIONS:
    raise ValueError(f"unknown reduction {reduction!r}; expected one of "
                     f"{REDUCTIONS}.")


def _filter_masks(criterion: _scores.Criterion, grads: Any, params: Any,
                  flags: list[bool], compression: Any, density: Any,
                  selection: str, reduction: str, normalize_layers: bool,
                  where: str) -> list[jax.Array]:
  """Per pooled leaf, a bool per output channel: among the global top Q?"""
  _check_output_axes(params, flags, where)
  leaves_g, treedef = jax.tree.flatten(grads)
  leaves_w = treedef.flatten_up_to(params)
  kept = _pool.num_kept(
      sum(jnp.shape(w)[-1] for w, f in zip(leaves_w, flags) if f),
      compression, density, where, "filters")
  return _filter_masks_jit(
      treedef.unflatten([g if f else None for g, f in zip(leaves_g, flags)]),
      treedef.unflatten([w if f else None for w, f in zip(leaves_w, flags)]),
      kept=kept, criterion=criterion, selection=selection,
      reduction=reduction, normalize_layers=normalize_layers)


def _filter_masks_fn(pool_grads: Any, pool_params: Any, *, kept: Any,
                     criterion: _scores.Criterion, selection: str,
                     reduction: str, normalize_layers: bool
                     ) -> list[jax.Array]:
  """The top-``kept`` filters of the pooled leaves (``None`` elsewhere)."""
  pooled = jax.tree.leaves(pool_params)
  scores = _scores.pool_scores(criterion, pool_grads, pool_params,
                               [True] * len(pooled))
  reduce = jnp.sum if reduction == "sum" else jnp.mean
  per_filter = [reduce(s.reshape(-1, s.shape[-1]), axis=0) for s in scores]
  if normalize_layers:
    per_filter = [s / jnp.maximum(jnp.linalg.norm(s), jnp.finfo(s.dtype).tiny)
                  for s in per_filter]
  return _selection.top_k_masks(per_filter, kept, selection=selection)


_filter_masks_jit = _jit.cached_jit(_filter_masks_fn, (
    "criterion", "selection", "reduction", "normalize_layers"))


def structured_gsm(
    compression: Any = None,
    *,
    density: Any = None,
    sparsity: Any = None,
    prunable: _pool.Prunable = None,
    criterion: _scores.Criterion = "taylor",
    reduction: str = "sum",
    normalize_layers: bool = False,
    selection: str = "auto",
) -> optax.GradientTransformationExtraArgs:
  r"""GSM over filters: masks the gradient of all but the Q best filters.

  Filter :math:`c` of a pooled kernel :math:`W` scores
  :math:`s_c = \sum_{i} T(W[i, c])`, the sum over all axes but the last of
  the entry scores (Taylor :math:`|g w|` by default); the
  :math:`Q = \lfloor F d \rfloor` best of the :math:`F` pooled filters keep
  their gradient, every entry of the others gets 0. Use it in place of
  :func:`optax_gsm.gsm` at the head of a chain. Q counts filters, whatever
  their size.

  Args:
    compression: C >= 1 over filters. Give this or ``density``.
    density: d in (0, 1], kept over total filters; may be injected.
    sparsity: or s in [0, 1), removed over total filters (d = 1 - s).
    prunable: the pool, as in :func:`optax_gsm.gsm`; every pooled leaf needs
      ``ndim >= 2`` with output channels on the last axis (Flax layout).
      Leave the output layer out to keep every class.
    criterion: per-entry score, as in :func:`optax_gsm.gsm`.
    reduction: ``"sum"`` (the filter score above) or ``"mean"`` (divided by
      the filter's size). Summed scores favour filters with many inputs, so
      at high compression a layer of small filters (a first conv) may lose
      every filter; ``"mean"`` removes the fan-in bias, not the bias of
      different weight scales.
    normalize_layers: divide each layer's filter scores by their L2 norm
      before the global ranking (Molchanov et al., 2017), so no layer wins or
      loses wholesale; layers with more filters then lose more of them.
    selection: the top-Q method, as in :func:`optax_gsm.gsm`.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose ``update`` needs
    ``params``; its :class:`StructuredGSMState` counts active filters.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax_gsm
    >>> params = {"w": jnp.array([[1.0, -2.0, 0.1], [0.5, 3.0, 0.1]])}
    >>> grads = {"w": jnp.ones((2, 3))}
    >>> tx = optax_gsm.structured_gsm(density=1 / 3)
    >>> updates, state = tx.update(grads, tx.init(params), params)
    >>> updates["w"].tolist(), int(state.active["w"])
    ([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], 1)
  """
  compression, density = _pool.canonical_ratio(compression, density, sparsity,
                                               "structured_gsm")
  _pool.validate_ratio(compression, density)
  _scores.criterion_fn(criterion)  # pylint: disable=protected-access
  _check_reduction(reduction)
  _selection.check_selection(selection)

  def flags_of(params):
    flags = _pool.pooled_flags(prunable, params, "structured_gsm")
    _check_output_axes(params, flags, "structured_gsm")
    return flags

  def init_fn(params):
    if _pool.is_params_placeholder(params):
      return _pool.placeholder_state(StructuredGSMState)
    flags = flags_of(params)
    leaves, treedef = jax.tree.flatten(params)
    filters = sum(jnp.shape(x)[-1] for x, f in zip(leaves, flags) if f)
    _pool.num_kept(filters, compression, density, "structured_gsm", "filters")
    return StructuredGSMState(
        count=jnp.zeros((), jnp.int32),
        active=treedef.unflatten([jnp.zeros((), jnp.uint32) if f
                                  else optax.MaskedNode() for f in flags]))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("structured_gsm needs params: the Taylor score is "
                       "|grad * param|.")
    _pool.check_same_structure(updates, params, "structured_gsm")
    flags = flags_of(params)
    _pool.check_state_fits(state, init_fn, params, "structured_gsm")
    masks = _filter_masks(criterion, updates, params, flags, compression,
                          density, selection, reduction, normalize_layers,
                          "structured_gsm")
    updates, active = _gsm.mask_pooled(updates, flags, list(masks))
    return updates, StructuredGSMState(
        count=optax.safe_increment(state.count), active=active)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _bias_index(paths: list[tuple], index: int) -> int | None:
  """Index of the ``bias`` leaf beside the ``kernel`` leaf at ``index``.

  Paths are compared without an ``nnx.Variable``'s trailing ``.value``, so
  ``nnx.State`` params pair up as dicts do.
  """
  path = _paths.clean(paths[index])
  if not path or getattr(path[-1], "key", None) != "kernel":
    return None
  want = path[:-1] + (jax.tree_util.DictKey("bias"),)
  for j, other in enumerate(paths):
    if _paths.clean(other) == want:
      return j
  return None


def structured_prune(
    params: Any,
    compression: Any = None,
    *,
    density: Any = None,
    sparsity: Any = None,
    prunable: _pool.Prunable = None,
    criterion: _scores.Criterion = "magnitude",
    grads: Any = None,
    reduction: str = "sum",
    normalize_layers: bool = False,
    selection: str = "auto",
) -> tuple[Any, Any]:
  r"""Hard-prunes whole filters: keeps the Q best, zeroes the rest and bias.

  Filters score :math:`\sum |w|` (their L1 norm) by default, or the sum of
  any :func:`optax_gsm.prune` criterion. A removed filter's ``bias`` entry
  (the ``bias`` leaf beside a ``kernel`` leaf, as Flax names them) is zeroed
  too, so the filter's output is exactly 0 and :func:`shrink` can drop it.

  Args:
    params: the parameters.
    compression: C >= 1 over filters. Give this or ``density``.
    density: d in (0, 1], kept over total filters.
    sparsity: or s in [0, 1), removed over total filters (d = 1 - s).
    prunable: the pool, as in :func:`structured_gsm`.
    criterion: ``"magnitude"`` (default), ``"taylor"`` (needs ``grads``) or a
      callable ``(grads, params) -> scores``.
    grads: gradients for a gradient-based criterion.
    reduction: ``"sum"`` or ``"mean"``, as in :func:`structured_gsm`.
    normalize_layers: as in :func:`structured_gsm`.
    selection: the top-Q method, as in :func:`optax_gsm.gsm`.

  Returns:
    ``(pruned_params, masks)`` as :func:`optax_gsm.prune` returns them, with
    whole-filter masks on pooled kernels, a mask on each matching bias, and
    ``None`` elsewhere; ready for :func:`optax_gsm.keep_masked`.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax_gsm
    >>> params = {"kernel": jnp.array([[1.0, -4.0], [0.5, 3.0]]),
    ...           "bias": jnp.array([0.5, 0.5])}
    >>> pruned, masks = optax_gsm.structured_prune(params, density=0.5)
    >>> pruned["kernel"].tolist(), pruned["bias"].tolist()
    ([[0.0, -4.0], [0.0, 3.0]], [0.0, 0.5])
  """
  compression, density = _pool.canonical_ratio(compression, density, sparsity,
                                               "structured_prune")
  _pool.validate_ratio(compression, density)
  flags = _pool.pooled_flags(prunable, params, "structured_prune")
  _check_reduction(reduction)
  grads = _scores.grads_for(criterion, grads, params, "structured_prune")
  filter_masks = iter(_filter_masks(criterion, grads, params, flags,
                                    compression, density, selection,
                                    reduction, normalize_layers,
                                    "structured_prune"))
  path_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  paths = [p for p, _ in path_leaves]
  leaves = [x for _, x in path_leaves]
  masks: list[Any] = [None] * len(leaves)
  for i, flag in enumerate(flags):
    if not flag:
      continue
    keep = next(filter_masks)
    masks[i] = jnp.broadcast_to(keep, jnp.shape(leaves[i]))
    j = _bias_index(paths, i)
    if j is not None and not flags[j] and jnp.shape(leaves[j]) == keep.shape:
      masks[j] = keep
  pruned = [x if m is None else jnp.where(m, x, jnp.zeros((), x.dtype))
            for x, m in zip(leaves, masks)]
  return treedef.unflatten(pruned), treedef.unflatten(masks)


def _live_outputs(kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
  """Output channels whose kernel slice or bias is not all zero."""
  return (kernel.reshape(-1, kernel.shape[-1]) != 0).any(0) | (bias != 0)


def _used_inputs(kernel: np.ndarray, channels: int) -> np.ndarray:
  """Input channels that reach some output (non-zero rows of ``kernel``).

  ``kernel``'s rows are laid out as (..., channels, out): conv ``HWIO`` or a
  dense kernel after a channels-last flatten.
  """
  return (kernel.reshape(-1, channels, kernel.shape[-1]) != 0).any((0, 2))


def _layers(params: Any, names: list[str]) -> list[dict[str, np.ndarray]]:
  try:
    return [{k: np.asarray(v) for k, v in params[n].items()} for n in names]
  except (KeyError, TypeError, AttributeError) as e:
    raise ValueError(f"shrink: params lack the layers {names}; pass the "
                     "model's params (with or without the 'params' "
                     "collection).") from e


def _shrink_chain(layers: list[dict[str, np.ndarray]]
                  ) -> tuple[list[dict[str, np.ndarray]], list[int]]:
  """Removes dead channels between consecutive layers of a plain chain.

  Channel c of layer i is dead when its output is exactly 0 (kernel slice
  and bias all zero; ReLU(0) = 0 and max-pool keeps 0) or when no entry of
  layer i + 1 reads it. Layer i + 1's kernel rows are read as (..., channel):
  an ``HWIO`` conv, a dense kernel, or a dense kernel after a channels-last
  flatten.
  """
  layers = [dict(layer) for layer in layers]
  widths = []
  for i in range(len(layers) - 1):
    out, nxt = layers[i], layers[i + 1]
    channels = out["kernel"].shape[-1]
    keep = _live_outputs(out["kernel"], out["bias"]) & _used_inputs(
        nxt["kernel"], channels)
    if not keep.any():
      raise ValueError(f"shrink: layer {i} has no live channel left; the "
                       "model's output no longer depends on its input.")
    out["kernel"] = out["kernel"][..., keep]
    out["bias"] = out["bias"][keep]
    k = nxt["kernel"]
    rows = k.reshape(-1, channels, k.shape[-1])[:, keep, :]
    if k.ndim == 2:
      nxt["kernel"] = rows.reshape(-1, k.shape[-1])
    else:
      nxt["kernel"] = rows.reshape(*k.shape[:-2], int(keep.sum()), k.shape[-1])
    widths.append(int(keep.sum()))
  return layers, widths


def shrink(model: Any, params: Any) -> tuple[Any, Any]:
  """Removes dead filters: a smaller dense model with the same outputs.

  A hidden channel is removed when its output is exactly zero (its kernel
  slice and its bias are all 0, as after :func:`structured_prune`) or when
  the next layer reads none of it; the matching inputs of the next layer go
  with it. Output classes and input features are never removed. Supports
  Linen modules shaped like the MLP and LeNet-5 of ``examples/common``: a
  ``features`` field naming the widths of layers ``Dense_0, Dense_1, ...``,
  or ``widths`` and ``num_classes`` fields for ``Conv_0, Conv_1, Dense_0,
  Dense_1``. The small model is ``model.clone`` with the new widths.

  Args:
    model: the Flax module.
    params: its parameters, with or without the ``"params"`` collection key;
      a dict or a ``FrozenDict`` (returned as one).

  Returns:
    ``(small_model, small_params)``: ``small_model.apply(small_params, x)``
    equals ``model.apply(params, x)`` up to float rounding.

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> from optax_gsm import shrink, structured_prune
    >>> class MLP(nn.Module):
    ...   features: tuple
    ...   @nn.compact
    ...   def __call__(self, x):
    ...     for i, width in enumerate(self.features):
    ...       x = nn.Dense(width)(x)
    ...       x = nn.relu(x) if i < len(self.features) - 1 else x
    ...     return x
    >>> model = MLP((8, 3))
    >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4)))
    >>> pool = {"params": {"Dense_0": {"kernel": True, "bias": False},
    ...                    "Dense_1": False}}  # keep every class
    >>> params, _ = structured_prune(params, density=0.5, prunable=pool)
    >>> small, small_params = shrink(model, params)
    >>> small.features, small_params["params"]["Dense_1"]["kernel"].shape
    ((4, 3), (4, 3))
  """
  wrapped = isinstance(params, Mapping) and set(params) == {"params"}
  inner = params["params"] if wrapped else params
  fields = getattr(model, "__dataclass_fields__", {})
  if "features" in fields:  # an MLP: Dense_0 ... Dense_{n-1}
    names = [f"Dense_{i}" for i in range(len(model.features))]
    layers, widths = _shrink_chain(_layers(inner, names))
    small = model.clone(features=tuple(widths) + (model.features[-1],))
  elif "widths" in fields and "num_classes" in fields:  # LeNet-5
    names = ["Conv_0", "Conv_1", "Dense_0", "Dense_1"]
    layers, widths = _shrink_chain(_layers(inner, names))
    small = model.clone(widths=tuple(widths))
  else:
    raise TypeError(
        "shrink supports Linen MLPs (a features field, layers Dense_0, ...) "
        "and LeNet-5s (widths and num_classes fields, layers Conv_0, Conv_1, "
        f"Dense_0, Dense_1), as in examples/common/models.py; got "
        f"{type(model).__name__}.")
  new = {n: {k: jnp.asarray(v) for k, v in layer.items()}
         for n, layer in zip(names, layers)}
  new = {"params": new} if wrapped else new
  if isinstance(params, flax.core.FrozenDict):
    new = flax.core.freeze(new)
  return small, new


def num_filters(params: Any, prunable: _pool.Prunable = None) -> int:
  """The number of filters (last-axis channels) in the pool.

  Example:
    >>> import jax.numpy as jnp
    >>> num_filters({"k": jnp.ones((3, 3, 2, 8)), "b": jnp.ones(8)})
    8
  """
  flags = _pool.pool_flags(prunable, params)
  _check_output_axes(params, flags, "num_filters")
  return sum(math.prod(jnp.shape(x)[-1:]) for x, f in
             zip(jax.tree.leaves(params), flags) if f)
