"""GSM's state as a flat dict of Python scalars, for any logger."""

from __future__ import annotations

from typing import Any

import jax

from optax_gsm import _gsm
from optax_gsm import _paths
from optax_gsm import _pool
from optax_gsm import tuning


def _is_gsm_state(x: Any) -> bool:
  return isinstance(x, _gsm.GSMState)


def _active_counts(state: Any) -> tuple[int, dict[str, int]]:
  """The step and the active count per pooled leaf of every GSMState."""
  found = [s for s in jax.tree.leaves(state, is_leaf=_is_gsm_state)
           if _is_gsm_state(s)]
  if not found:
    raise ValueError(
        "gsm_metrics: the state holds no GSMState; pass the optimizer state "
        "of a chain with optax_gsm.gsm or gsm_sgd (or a TrainState / "
        "nnx.Optimizer holding one).")
  flat = [(_paths.name(path, drop_collection=True), count) for s in found
          for path, count in jax.tree_util.tree_flatten_with_path(s.active)[0]]
  step, counts = jax.device_get((jax.tree.leaves(found[0].count)[0],
                                 [c for _, c in flat]))
  active: dict[str, int] = {}
  for (name, _), count in zip(flat, counts):
    if name in active:
      raise ValueError(f"gsm_metrics: several GSMStates count leaf {name}.")
    active[name] = int(count)
  return int(step), active


def gsm_metrics(
    state: Any,
    params: Any = None,
    *,
    compression: Any = None,
    density: Any = None,
    sparsity: Any = None,
) -> dict[str, float | int]:
  """Step, active counts and densities of GSM, as a flat dict of scalars.

  Finds the :class:`optax_gsm.GSMState` anywhere in ``state`` (a chain,
  ``optax.inject_hyperparams``, ``nnx.Optimizer``'s ``opt_state``) and reads
  it, so the result goes to TensorBoard, CLU, W&B or ``print`` as it is.
  Leaf names drop ``nnx.Variable``'s ``value`` and Linen's leading
  ``params`` collection, e.g. ``gsm/density/Dense_0/kernel``. Call it
  outside ``jit``: it reads the arrays back to the host.

  Args:
    state: an optimizer state, or an object with an ``opt_state`` attribute
      (``flax.training.train_state.TrainState``, ``nnx.Optimizer``).
    params: the parameters; needed for densities and the prune share.
    compression: the ratio for ``gsm/prune_share`` (needs ``params``);
      without one, the state's own Q / N after its first update.
    density: or the kept fraction for it.
    sparsity: or s in [0, 1), removed over total entries (d = 1 - s).

  Returns:
    ``{"gsm/step": int, "gsm/active": int}``; without ``params``,
    ``"gsm/active/<leaf>"`` (int) per pooled leaf; with ``params``,
    ``"gsm/pool"`` (int), ``"gsm/density"`` and ``"gsm/density/<leaf>"``
    (active over size, float) and, once the state has been updated (or
    with a ratio), ``"gsm/prune_share"`` (:func:`optax_gsm.prune_share`
    over GSM's pool).

  Example:
    >>> import jax.numpy as jnp, optax_gsm
    >>> params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.ones(2)}
    >>> opt = optax_gsm.gsm_sgd(0.1, compression=2)
    >>> _, state = opt.update(params, opt.init(params), params)
    >>> optax_gsm.gsm_metrics(state)
    {'gsm/step': 1, 'gsm/active': 2, 'gsm/active/w': 2}
    >>> m = optax_gsm.gsm_metrics(state, params)  # the ratio from the state
    >>> m["gsm/density/w"], round(m["gsm/prune_share"], 4)
    (0.5, 0.0877)
  """
  compression, density = _pool.canonical_ratio(compression, density, sparsity,
                                               "gsm_metrics")
  state = getattr(state, "opt_state", state)
  step, active = _active_counts(state)
  metrics: dict[str, float | int] = {"gsm/step": step,
                                     "gsm/active": sum(active.values())}
  if params is None:
    if compression is not None or density is not None:
      raise ValueError("gsm_metrics: the prune share needs params as well as "
                       "a compression or density.")
    metrics.update({f"gsm/active/{k}": v for k, v in active.items()})
    return metrics
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = [_paths.name(p, drop_collection=True) for p, _ in flat]
  sizes = {n: int(x.size) for n, (_, x) in zip(names, flat) if n in active}
  missing = sorted(set(active) - set(sizes))
  if missing:
    raise ValueError(f"gsm_metrics: params lack the pooled leaves {missing} "
                     "that the GSM state counts.")
  pool = sum(sizes.values())
  metrics["gsm/pool"] = pool
  metrics["gsm/density"] = metrics["gsm/active"] / pool
  metrics.update({f"gsm/density/{k}": v / sizes[k]
                  for k, v in active.items()})
  if compression is None and density is None and step >= 1:
    density = metrics["gsm/density"]  # Q / N: the state's own ratio
  if compression is not None or density is not None:
    prunable = treedef.unflatten([n in active for n in names])
    metrics["gsm/prune_share"] = float(tuning.prune_share(
        params, compression, density=density, prunable=prunable))
  return metrics


def kept_and_pool(state: Any, params: Any) -> tuple[int, int] | None:
  """GSM's Q (its active entries) and pool size N, read from the state.

  After the first update the active counts of :class:`optax_gsm.GSMState`
  sum to exactly Q, so the ratio the state was built with is Q / N.

  Args:
    state: an optimizer state (or an object with ``opt_state``).
    params: the parameters.

  Returns:
    ``(Q, N)``, or None when ``state`` holds no ``GSMState`` or has not
    been updated yet.
  """
  state = getattr(state, "opt_state", state)
  if not any(_is_gsm_state(s) for s in jax.tree.leaves(
      state, is_leaf=_is_gsm_state)):
    return None
  found = gsm_metrics(state, params)
  if found["gsm/step"] < 1:
    return None
  return found["gsm/active"], found["gsm/pool"]
