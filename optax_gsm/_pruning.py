"""The hard prune, holding a mask during training, and sparsity reports."""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_gsm import _jit
from optax_gsm import _paths
from optax_gsm import _pool
from optax_gsm import _scores
from optax_gsm import _selection


def prune(
    params: Any,
    compression: Any = None,
    *,
    density: Any = None,
    sparsity: Any = None,
    prunable: _pool.Prunable = None,
    criterion: _scores.Criterion = "magnitude",
    grads: Any = None,
    selection: str = "auto",
) -> tuple[Any, Any]:
  r"""Hard-prunes params globally: keeps the Q most important, zeroes the rest.

  With the default magnitude criterion, the Q = floor(N / C) pooled entries
  of largest :math:`|w|` over the whole pool are kept and every other pooled
  entry is set to exactly ``0.0``; leaves outside the pool are untouched.
  This is GSM's final step, and one-shot global magnitude pruning.

  Args:
    params: the parameters.
    compression: C >= 1, total over kept entries. Give this or ``density``.
    density: d in (0, 1], kept over total entries.
    sparsity: or s in [0, 1), removed over total entries (d = 1 - s).
    prunable: the pool, as in :func:`optax_gsm.gsm`.
    criterion: ``"magnitude"`` (default), ``"taylor"`` (needs ``grads``) or a
      callable ``(grads, params) -> scores``.
    grads: gradients for a gradient-based criterion (e.g. SNIP's
      :math:`|g w|` at initialization).
    selection: the top-Q method, as in :func:`optax_gsm.gsm`.

  Returns:
    ``(pruned_params, masks)``: masks hold a bool array for each pooled leaf
    (True = kept) and ``None`` for the others.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax_gsm
    >>> params = {"w": jnp.array([[1.0, -4.0], [0.5, 3.0]]), "b": jnp.ones(2)}
    >>> pruned, masks = optax_gsm.prune(params, compression=2)
    >>> pruned["w"].tolist(), masks["b"] is None
    ([[0.0, -4.0], [0.0, 3.0]], True)
  """
  compression, density = _pool.canonical_ratio(compression, density, sparsity,
                                               "prune")
  _pool.validate_ratio(compression, density)
  _selection.check_selection(selection)
  flags = _pool.pooled_flags(prunable, params, "prune")
  if grads is None and isinstance(criterion, str) and criterion == "magnitude":
    grads = params  # unread: |w| needs no gradient, so no zeros to build
  grads = _scores.grads_for(criterion, grads, params, "prune")
  leaves, treedef = jax.tree.flatten(params)
  kept = _pool.num_kept(
      sum(math.prod(jnp.shape(x)) for x, f in zip(leaves, flags) if f),
      compression, density, "prune")
  pooled, masks = _prune_pool(
      treedef.unflatten([g if f else None for g, f in zip(
          treedef.flatten_up_to(grads), flags)]),
      treedef.unflatten([x if f else None for x, f in zip(leaves, flags)]),
      kept=kept, criterion=criterion, selection=selection)
  pooled, masks = iter(pooled), iter(masks)
  mask_leaves = [next(masks) if f else None for f in flags]
  pruned = [next(pooled) if f else x for x, f in zip(leaves, flags)]
  return treedef.unflatten(pruned), treedef.unflatten(mask_leaves)


def _prune_pool_fn(pool_grads: Any, pool_params: Any, *, kept: Any,
                   criterion: _scores.Criterion,
                   selection: str) -> tuple[list[Any], list[Any]]:
  """The pooled leaves of :func:`prune`, pruned, and their masks.

  ``pool_grads`` and ``pool_params`` hold ``None`` outside the pool, as the
  criterion sees them.
  """
  pooled = jax.tree.leaves(pool_params)
  scores = _scores.pool_scores(criterion, pool_grads, pool_params,
                               [True] * len(pooled))
  masks = _selection.top_k_masks(scores, kept, selection=selection)
  return ([jnp.where(m, x, jnp.zeros((), x.dtype))
           for x, m in zip(pooled, masks)], masks)


_prune_pool = _jit.cached_jit(_prune_pool_fn, ("criterion", "selection"))


def apply_masks(params: Any, masks: Any) -> Any:
  """Zeroes the entries of ``params`` where ``masks`` is False.

  Args:
    params: the parameters.
    masks: bool arrays for masked leaves, ``None`` for leaves left as they are.

  Returns:
    The masked parameters.

  Example:
    >>> import jax.numpy as jnp
    >>> apply_masks({"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([True, False])})
    {'w': Array([1., 0.], dtype=float32)}
  """
  masks = _paths.align(masks, params)
  _check_masks(masks, params, "apply_masks")
  return jax.tree.map(
      lambda m, x: x if m is None else jnp.where(m, x, jnp.zeros((), x.dtype)),
      masks, params, is_leaf=_paths.is_none)


def _check_masks(masks: Any, params: Any, where: str) -> None:
  """Raises unless ``masks`` has a same-shaped mask or ``None`` per leaf.

  A ``None`` in params (as ``eqx.filter`` leaves) takes a ``None`` mask.
  """
  mask_def = jax.tree.structure(masks, is_leaf=_paths.is_none)
  param_def = jax.tree.structure(params, is_leaf=_paths.is_none)
  if mask_def != param_def:
    raise ValueError(
        f"{where}: masks must match params leaf for leaf (None where not "
        f"masked): {_paths.mismatch(masks, params)}. Build the masks on the "
        "tree the optimizer sees (e.g. prune(nnx.state(model, nnx.Param)) "
        "for nnx.Optimizer(..., wrt=nnx.Param)).")
  for m, x in zip(jax.tree.leaves(masks, is_leaf=_paths.is_none),
                  jax.tree.leaves(params, is_leaf=_paths.is_none)):
    if m is not None and (x is None or jnp.shape(m) != jnp.shape(x)):
      leaf = "None" if x is None else f"a leaf of shape {jnp.shape(x)}"
      raise ValueError(f"{where}: a mask of shape {jnp.shape(m)} stands for "
                       f"{leaf}; masks are not broadcast.")


def _held_masks(masks: Any, params: Any, where: str) -> Any:
  """``masks`` in the structure of ``params``, checked.

  Matched by path when the containers differ (``nnx.Optimizer`` passes pure
  arrays). Where ``optax.masked`` or ``optax.multi_transform`` hands a
  ``optax.MaskedNode`` for a leaf of another group, the mask becomes
  ``None``: that leaf's update is not this transformation's.
  """
  plain = jax.tree.map(lambda x: None if _paths.is_masked_node(x) else x, params,
                       is_leaf=_paths.is_masked_node)
  aligned = _paths.align(masks, plain)
  hidden = [_paths.is_masked_node(x) for x in jax.tree.leaves(
      params, is_leaf=lambda x: x is None or _paths.is_masked_node(x))]
  mask_def = jax.tree.structure(aligned, is_leaf=_paths.is_none)
  if any(hidden) and mask_def == jax.tree.structure(plain, is_leaf=_paths.is_none):
    aligned = mask_def.unflatten(
        [None if h else m for m, h in
         zip(jax.tree.leaves(aligned, is_leaf=_paths.is_none), hidden)])
  _check_masks(aligned, plain, where)
  return aligned


class KeepMaskedState(NamedTuple):
  """``keep_masked`` holds no state; the masks are closed over."""


def keep_masked(masks: Any) -> optax.GradientTransformationExtraArgs:
  r"""Keeps pruned entries at exactly zero while training goes on.

  For a masked-out entry the update becomes :math:`-w`, so that
  ``optax.apply_updates`` lands on exactly ``0.0`` whatever came before in the
  chain; kept entries and unmasked leaves pass through. Put it last in the
  chain, e.g. to fine-tune after :func:`prune` or to retrain a lottery ticket.

  Args:
    masks: bool arrays for the masked leaves (True = kept), ``None`` for the
      leaves to leave alone, as :func:`prune` returns them. Masks of an
      ``nnx.State`` (``prune(nnx.state(model, nnx.Param), ...)``) also fit
      the pure arrays ``nnx.Optimizer`` passes: when the containers differ,
      masks are matched to params by path (``l1/kernel``).

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose ``update`` needs
    ``params``.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import optax_gsm
    >>> params = {"w": jnp.array([1.0, 0.0])}
    >>> masks = {"w": jnp.array([True, False])}
    >>> opt = optax.chain(optax.sgd(0.1), optax_gsm.keep_masked(masks))
    >>> grads = {"w": jnp.array([1.0, 1.0])}
    >>> updates, _ = opt.update(grads, opt.init(params), params)
    >>> [round(w, 4) for w in optax.apply_updates(params, updates)["w"].tolist()]
    [0.9, 0.0]
  """

  def init_fn(params):
    if _pool.is_params_placeholder(params):  # optax.tree.map_params
      return KeepMaskedState()
    _held_masks(masks, params, "keep_masked")
    return KeepMaskedState()

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("keep_masked needs params: the update of a pruned entry "
                       "is -param, which lands it on exactly zero.")
    aligned = _held_masks(masks, params, "keep_masked")
    updates = jax.tree.map(
        # -x in x's own precision (or wider), so that w + (-w) is exactly 0.
        lambda m, u, x: u if m is None else jnp.where(m, u, -x),
        aligned, updates, params, is_leaf=_paths.is_none)
    return updates, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _hard_prune_step_fn(pooled_u: list[Any], pooled_w: list[Any],
                        old: list[Any], count: jax.Array, *, kept: Any,
                        step: Any, selection: str
                        ) -> tuple[list[Any], list[Any]]:
  """At ``count == step`` the top-``kept`` of ``|w + u|``, else ``old``;
  the pooled updates then send the pruned entries to 0. ``step=None``
  never prunes."""
  def prune_now():
    after = [jnp.abs((w + u).astype(_scores.score_dtype(w.dtype)))
             for w, u in zip(pooled_w, pooled_u)]
    return _selection.top_k_masks(after, kept, selection=selection)

  if step is None:
    masks = list(old)
  else:
    masks = jax.lax.cond(count == step, prune_now, lambda: list(old))
  return [jnp.where(m, u, -w) for m, u, w in
          zip(masks, pooled_u, pooled_w)], masks


_hard_prune_step = _jit.cached_jit(_hard_prune_step_fn, ("selection",))

# The int32 step count saturates at 2**31 - 1: a later step never comes.
_INT32_MAX = 2**31 - 1
_NEVER = object()


class HardPruneState(NamedTuple):
  """State of :func:`hard_prune_at`."""
  count: jax.Array  # shape (), int32: updates so far
  masks: Any  # per pooled leaf: bool, True = kept; MaskedNode if unpooled


def _check_step(step: Any) -> Any:
  """An int >= 0, or a scalar integer array (``optax.inject_hyperparams``)."""
  if isinstance(step, (jax.Array, np.ndarray)):
    if jnp.shape(step) != () or not jnp.issubdtype(step.dtype, jnp.integer):
      raise TypeError(f"step must be an int >= 0, got {step!r}.")
    if isinstance(step, jax.core.Tracer):
      return step
    step = int(step)
  if isinstance(step, bool) or not isinstance(step, numbers.Integral):
    raise TypeError(f"step must be an int >= 0, got {step!r}.")
  if step < 0:
    raise ValueError(f"step must be >= 0, got {step}.")
  return int(step)


def hard_prune_at(
    step: int,
    compression: Any = None,
    *,
    density: Any = None,
    sparsity: Any = None,
    prunable: _pool.Prunable = None,
    selection: str = "auto",
) -> optax.GradientTransformationExtraArgs:
  r"""Hard-prunes by global magnitude at update ``step``, then holds the mask.

  At update number ``step`` (counting from 0) the Q = floor(N / C) pooled
  entries of largest :math:`|w + u|`, the magnitudes the update would give,
  are kept and every other pooled entry is sent to exactly ``0.0``; from then
  on their update stays :math:`-w`, as in :func:`keep_masked`. Before
  ``step`` updates pass through. Put it last in a chain.

  This is our extension of GSM, beyond the paper: :func:`gsm_sgd`'s
  ``prune_step`` puts the final hard prune inside the learning-rate schedule,
  at the first decay, so the last phases train the exact Q-weight network
  instead of a near-sparse one whose small weights the prune would remove
  (docs/lossless.md). With it, at most Q pooled entries are non-zero after
  every update from ``step`` on.

  Args:
    step: the update at which to prune, an int >= 0. optax counts updates
      in int32, so a step beyond ``2**31 - 1`` (e.g. ``sys.maxsize``) never
      comes: the masks stay all True.
    compression: C >= 1, total over kept entries. Give this or ``density``.
    density: d in (0, 1], kept over total entries.
    sparsity: or s in [0, 1), removed over total entries (d = 1 - s).
    prunable: the pool, as in :func:`optax_gsm.gsm`.
    selection: the top-Q method, as in :func:`optax_gsm.gsm`.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose ``update`` needs
    ``params``; its state :class:`HardPruneState` holds the masks (all True
    before ``step``).

  Example:
    >>> import jax.numpy as jnp, optax
    >>> import optax_gsm
    >>> params = {"w": jnp.array([[1.0, -4.0], [0.5, 3.0]])}
    >>> opt = optax.chain(optax.sgd(0.1), optax_gsm.hard_prune_at(1, 2))
    >>> state = opt.init(params)
    >>> grads = {"w": jnp.zeros((2, 2))}
    >>> for _ in range(2):
    ...   updates, state = opt.update(grads, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> params["w"].tolist()
    [[0.0, -4.0], [0.0, 3.0]]
  """
  step = _check_step(step)
  compression, density = _pool.canonical_ratio(compression, density, sparsity,
                                               "hard_prune_at")
  if isinstance(step, int) and step > _INT32_MAX:
    step = _NEVER  # a "never" sentinel such as sys.maxsize
  _pool.validate_ratio(compression, density)
  _selection.check_selection(selection)

  def init_fn(params):
    if _pool.is_params_placeholder(params):
      return _pool.placeholder_state(HardPruneState)
    flags = _pool.pooled_flags(prunable, params, "hard_prune_at")
    leaves, treedef = jax.tree.flatten(params)
    pool_size = sum(math.prod(jnp.shape(x))
                    for x, f in zip(leaves, flags) if f)
    _pool.num_kept(pool_size, compression, density, "hard_prune_at")
    masks = [jnp.ones(jnp.shape(x), bool) if f else optax.MaskedNode()
             for x, f in zip(leaves, flags)]
    return HardPruneState(count=jnp.zeros((), jnp.int32),
                          masks=treedef.unflatten(masks))

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args
    if params is None:
      raise ValueError("hard_prune_at needs params: a pruned entry's update "
                       "is -param, which lands it on exactly zero.")
    _pool.check_same_structure(updates, params, "hard_prune_at")
    flags = _pool.pooled_flags(prunable, params, "hard_prune_at")
    leaves_u, treedef = jax.tree.flatten(updates)
    leaves_w = treedef.flatten_up_to(params)
    _pool.check_state_fits(state, init_fn, params, "hard_prune_at")
    pooled_u = [u for u, f in zip(leaves_u, flags) if f]
    pooled_w = [w for w, f in zip(leaves_w, flags) if f]
    kept = _pool.num_kept(sum(math.prod(jnp.shape(w)) for w in pooled_w),
                          compression, density, "hard_prune_at")
    out, masks = _hard_prune_step(
        pooled_u, pooled_w, jax.tree.leaves(state.masks), state.count,
        kept=kept, step=None if step is _NEVER else step,
        selection=selection)
    out = iter(out)
    return treedef.unflatten([next(out) if f else u for u, f in
                              zip(leaves_u, flags)]), HardPruneState(
        count=optax.safe_increment(state.count),
        masks=jax.tree.structure(state.masks).unflatten(masks))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class LeafSparsity:
  """Sparsity of one leaf."""
  path: str
  shape: tuple[int, ...]
  kept: int
  total: int

  @property
  def density(self) -> float:
    return self.kept / self.total if self.total else 0.0


@dataclasses.dataclass(frozen=True)
class SparsityReport:
  """Per-leaf and global sparsity; ``str()`` gives a table."""
  leaves: tuple[LeafSparsity, ...]

  @property
  def kept(self) -> int:
    return sum(leaf.kept for leaf in self.leaves)

  @property
  def total(self) -> int:
    return sum(leaf.total for leaf in self.leaves)

  @property
  def density(self) -> float:
    return self.kept / self.total if self.total else 0.0

  @property
  def compression(self) -> float:
    return self.total / self.kept if self.kept else float("inf")

  def as_dict(self) -> dict[str, Any]:
    """Plain data: per-leaf rows and the global figures."""
    return {
        "leaves": [dict(path=l.path, shape=list(l.shape), kept=l.kept,
                        total=l.total, density=l.density)
                   for l in self.leaves],
        "kept": self.kept, "total": self.total, "density": self.density,
        "compression": self.compression,
    }

  def __str__(self) -> str:
    rows = [(l.path, "x".join(map(str, l.shape)) or "scalar", f"{l.kept:,}",
             f"{l.total:,}", f"{100 * l.density:.2f}%") for l in self.leaves]
    rows.append(("total", "", f"{self.kept:,}", f"{self.total:,}",
                 f"{100 * self.density:.2f}%"))
    head = ("leaf", "shape", "kept", "total", "density")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    line = lambda r: "  ".join(
        c.ljust(w) if i < 2 else c.rjust(w)
        for i, (c, w) in enumerate(zip(r, widths)))
    rule = "-" * len(line(head))
    body = [line(r) for r in rows]
    return "\n".join([line(head), rule, *body[:-1], rule, body[-1],
                      f"compression {self.compression:.2f}x"])


def sparsity_report(tree: Any, prunable: _pool.Prunable = None
                    ) -> SparsityReport:
  """Per-leaf and global density of params (non-zeros) or of masks (Trues).

  Args:
    tree: parameters (entries that are not ``0`` count as kept) or masks
      (``True`` counts as kept; ``None`` leaves are skipped), as :func:`prune`
      returns them.
    prunable: which parameter leaves to report, as in :func:`optax_gsm.gsm`;
      ignored for masks, whose ``None`` leaves say it.

  Returns:
    A :class:`SparsityReport`: ``.leaves`` (path, shape, kept, total,
    density), the global ``.kept``, ``.total``, ``.density`` and
    ``.compression``; ``print`` it for a table.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax_gsm
    >>> report = optax_gsm.sparsity_report({"w": jnp.array([[0.0, 2.0]])})
    >>> report.kept, report.total, report.density
    (1, 2, 0.5)
  """
  paths_leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_paths.is_none)[0]
  present = [x for _, x in paths_leaves if x is not None]
  is_mask = bool(present) and all(jnp.result_type(x) == jnp.bool_
                                  for x in present)
  if is_mask:
    flags = [x is not None for _, x in paths_leaves]
  else:
    flags = _pool.pool_flags(prunable, tree)
    paths_leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  rows = []
  for (path, x), flag in zip(paths_leaves, flags):
    if not flag:
      continue
    x = np.asarray(x)
    rows.append(LeafSparsity(path=_paths.name(path, drop_collection=True),
                             shape=tuple(x.shape),
                             kept=int(np.count_nonzero(x)), total=int(x.size)))
  if not rows:
    raise ValueError("sparsity_report: no leaf to report on.")
  return SparsityReport(tuple(rows))
