"""Data-free pruning at initialization: iterative SynFlow (Tanaka et al.)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
import math
from typing import Any

import jax
import jax.numpy as jnp

from optax_gsm import _pool
from optax_gsm import _pruning
from optax_gsm import _scores
from optax_gsm import _selection


def _is_number(x: Any) -> bool:
  dtype = jnp.result_type(x)
  return (jnp.issubdtype(dtype, jnp.number)
          and not jnp.issubdtype(dtype, jnp.unsignedinteger))


def synflow_objective(apply_fn: Callable[[Any, jax.Array], jax.Array],
                      params: Any, input_shape: Sequence[int]) -> jax.Array:
  r"""The synaptic flow :math:`R = \mathbb{1}^\top f(\mathbb{1}; |\theta|)`.

  The network is run with every parameter replaced by its absolute value on
  an all-ones input, and its outputs are summed. With ReLU and max-pooling,
  every activation is then non-negative, so the network is linear in each
  layer and :math:`R > 0` iff some input-to-output path survives.

  Args:
    apply_fn: ``apply_fn(params, x) -> outputs``.
    params: the parameters (masked ones are 0).
    input_shape: the input's shape, batch axis included (e.g. ``(1, 784)``).

  Returns:
    The scalar :math:`R`.

  Example:
    >>> import jax.numpy as jnp
    >>> f = lambda p, x: x @ p["w"]
    >>> float(synflow_objective(f, {"w": jnp.array([[1.0], [-2.0]])}, (1, 2)))
    3.0
  """
  # Only numbers are taken in absolute value: a PRNG key leaf (an nnx.Rngs
  # or nnx.Dropout in nnx.state(model)) or a bool flag passes as it is.
  abs_params = jax.tree.map(
      lambda x: jnp.abs(x) if _is_number(x) else x, params)
  return jnp.sum(apply_fn(abs_params, jnp.ones(tuple(input_shape))))


def synflow(
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    input_shape: Sequence[int],
    compression: Any = None,
    *,
    density: Any = None,
    sparsity: Any = None,
    rounds: int = 100,
    prunable: _pool.Prunable = None,
    selection: str = "auto",
) -> tuple[Any, Any]:
  r"""Iterative SynFlow: data-free global pruning at initialization.

  For rounds :math:`r = 1 \dots R_n`, with the kept fraction shrinking
  exponentially, :math:`d_r = d^{\,r / R_n}`, the pooled weights are scored
  by the synaptic saliency

  .. math::
    S(w) = \left| w \cdot \frac{\partial R}{\partial w} \right|, \qquad
    R = \mathbb{1}^\top f(\mathbb{1}; |\theta \odot m|),

  on the currently masked network, and the global top
  :math:`\lfloor N d_r \rfloor` are kept (:func:`optax_gsm.taylor_score` on
  the gradient of :math:`R`, then :func:`optax_gsm.top_k_masks`). No data
  and no labels are used. The final mask keeps
  exactly :math:`Q = \lfloor N d \rfloor` entries. Biases outside the pool
  are taken in absolute value but never pruned. Scores are computed in the
  params' precision; a very deep net can overflow float32 (enable x64).

  Args:
    apply_fn: ``apply_fn(params, x) -> outputs``, e.g. a Flax ``model.apply``.
    params: the initial parameters.
    input_shape: the input's shape, batch axis included.
    compression: C >= 1, total over kept entries. Give this or ``density``.
    density: d in (0, 1], kept over total entries.
    sparsity: or s in [0, 1), removed over total entries (d = 1 - s).
    rounds: :math:`R_n \ge 1`; the paper uses 100.
    prunable: the pool, as in :func:`optax_gsm.gsm`.
    selection: ``"auto"`` (the default), ``"histogram"``, ``"radix_count"``
      or ``"sort"`` (the per-round count is traced, so not ``"top_k"``).

  Returns:
    ``(pruned_params, masks)`` as :func:`optax_gsm.prune` returns them.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import optax_gsm
    >>> params = {"a": jnp.array([[1.0, 0.1], [0.2, 3.0]]),
    ...           "b": jnp.array([[0.5], [0.01]])}
    >>> f = lambda p, x: jax.nn.relu(x @ p["a"]) @ p["b"]
    >>> _, masks = optax_gsm.synflow(f, params, (1, 2), density=0.5, rounds=10)
    >>> masks["a"].tolist(), masks["b"].tolist()
    ([[True, False], [True, False]], [[True], [False]])

  References:
    Tanaka et al, `Pruning neural networks without any data by iteratively
    conserving synaptic flow <https://arxiv.org/abs/2006.05467>`_, 2020
  """
  if not callable(apply_fn):
    raise TypeError(
        f"apply_fn must be callable, got {type(apply_fn).__name__}.")
  rounds = _pool.check_int("rounds", rounds, 1)
  _selection.check_selection(selection, traced_k=True)
  compression, density = _pool.canonical_ratio(compression, density, sparsity,
                                               "synflow")
  _pool.validate_ratio(compression, density)
  flags = _pool.pooled_flags(prunable, params, "synflow")
  pool_size = sum(x.size for x, f in zip(jax.tree.leaves(params), flags) if f)
  final = int(_pool.num_kept(pool_size, compression, density, "synflow"))
  # Per-round counts N * (Q / N) ** (r / rounds), in float64 on the host;
  # the last is exactly Q.
  counts = [max(final, math.floor(pool_size * (final / pool_size) ** (
      (r + 1) / rounds))) for r in range(rounds - 1)] + [final]
  counts = jnp.asarray(counts, jnp.uint32)
  leaves, treedef = jax.tree.flatten(params)

  def tree_of(masks):
    it = iter(masks)
    return treedef.unflatten([next(it) if f else None for f in flags])

  def objective(p):
    return synflow_objective(apply_fn, p, input_shape)

  def one_round(r, masks):
    masked = _pruning.apply_masks(params, tree_of(masks))
    scores = _scores.pool_scores("taylor", _scores.float_grad(objective, masked),
                              masked, flags)
    # A pruned entry scores -inf, so it never ties its way back in.
    scores = [jnp.where(m, s, -jnp.inf) for m, s in zip(masks, scores)]
    return _selection.top_k_masks(scores, counts[r], selection=selection)

  masks = [jnp.ones(jnp.shape(x), bool) for x, f in zip(leaves, flags) if f]
  masks = jax.jit(lambda m: jax.lax.fori_loop(0, rounds, one_round, m))(masks)
  mask_tree = tree_of(masks)
  return _pruning.apply_masks(params, mask_tree), mask_tree
