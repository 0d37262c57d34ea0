"""Checkpoints of a GSM train state, checked against the model on restore.

:func:`save` and :func:`restore` store params and optimizer state with
`orbax-checkpoint <https://orbax.readthedocs.io>`_ (the ``checkpoint`` extra:
``pip install optax_gsm[checkpoint]``), beside a JSON description of every
leaf and of the hyperparameters you name. Restoring into another model, or
with another compression, raises a ``ValueError`` that names the difference
instead of orbax's shape error. :func:`describe`, :func:`check_compatible`
and :func:`check_opt_state` need no orbax.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np
import optax

from optax_gsm import _pool
from optax_gsm import metrics

_MAX_LISTED = 8


def _leaf_specs(tree: Any) -> dict[str, list[Any]]:
  """``{path: [shape, dtype]}`` for every leaf of arrays or ShapeDtypeStructs."""
  return {
      jax.tree_util.keystr(path): [list(jax.numpy.shape(leaf)),
                                   str(jax.numpy.result_type(leaf))]
      for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def describe(params: Any, opt_state: Any, **hyperparams: Any) -> dict:
  """A JSON-able description of a train state: each leaf, and hyperparameters.

  Args:
    params: the parameters (arrays or ``jax.ShapeDtypeStruct``).
    opt_state: the optimizer state.
    **hyperparams: numbers or strings that must match on restore, e.g.
      ``compression=10``; NumPy and JAX scalars are stored as Python
      numbers (a float32 as its shortest decimal).

  Returns:
    ``{"params": {path: [shape, dtype]}, "opt_state": {...},
    "hyperparams": {...}}``.

  Example:
    >>> import jax.numpy as jnp
    >>> d = describe({"w": jnp.ones((2, 3))}, (), compression=4)
    >>> d["params"], d["hyperparams"]
    ({"['w']": [[2, 3], 'float32']}, {'compression': 4})
  """
  hyperparams = {name: _plain(name, value)
                 for name, value in hyperparams.items()}
  return {"params": _leaf_specs(params), "opt_state": _leaf_specs(opt_state),
          "hyperparams": hyperparams}


def _plain(name: str, value: Any) -> Any:
  """A hyperparameter as JSON: NumPy and JAX scalars become Python numbers.

  A float32 value becomes the shortest decimal that rounds to it, so
  ``jnp.float32(0.1)`` is stored as ``0.1`` and matches a Python ``0.1``.
  """
  if isinstance(value, (jax.Array, np.ndarray, np.generic)):
    array = np.asarray(value)
    if array.ndim:
      raise TypeError(f"hyperparams must be JSON numbers or strings, got "
                      f"{name}={value!r}, an array of shape {array.shape}.")
    if array.dtype.kind == "b":
      return bool(array)
    if array.dtype.kind in "iu":
      return int(array)
    if array.dtype.kind == "f":
      return float(np.format_float_positional(array[()], unique=True))
    raise TypeError(f"hyperparams must be JSON numbers or strings, got "
                    f"{name}={value!r}.")
  try:
    json.dumps(value, allow_nan=False)
  except (TypeError, ValueError) as e:
    raise TypeError(f"hyperparams must be JSON numbers (finite) or strings, "
                    f"got {name}={value!r}.") from e
  return value


def _differences(saved: dict, expected: dict) -> list[str]:
  saved, expected = (json.loads(json.dumps(d)) for d in (saved, expected))
  lines = []
  for name in ("hyperparams", "params", "opt_state"):
    have, want = saved.get(name, {}), expected.get(name, {})
    for key in sorted(set(have) | set(want), key=str):
      if key not in want:
        lines.append(f"{name} {key}: in the checkpoint ({have[key]}) but not "
                     "in this run")
      elif key not in have:
        lines.append(f"{name} {key}: in this run ({want[key]}) but not in "
                     "the checkpoint")
      elif have[key] != want[key]:
        lines.append(f"{name} {key}: checkpoint has {have[key]}, this run "
                     f"has {want[key]}")
  return lines


def check_compatible(saved: dict, expected: dict) -> None:
  """Raises if a checkpoint's description differs from this run's.

  Args:
    saved: :func:`describe` of the checkpoint.
    expected: :func:`describe` of the state to restore into.

  Raises:
    ValueError: naming each differing hyperparameter and leaf (path, shape,
      dtype), the first few of them if many differ.

  Example:
    >>> import jax.numpy as jnp
    >>> old = describe({"w": jnp.ones(2)}, (), compression=4)
    >>> new = describe({"w": jnp.ones(2)}, (), compression=8)
    >>> check_compatible(old, new)
    Traceback (most recent call last):
    ...
    ValueError: the checkpoint does not fit this run: hyperparams compression: checkpoint has 4, this run has 8
  """
  lines = _differences(saved, expected)
  if lines:
    more = len(lines) - _MAX_LISTED
    listed = "; ".join(lines[:_MAX_LISTED]) + (
        f"; and {more} more" if more > 0 else "")
    raise ValueError(f"the checkpoint does not fit this run: {listed}")


def check_opt_state(opt: optax.GradientTransformation, params: Any,
                    opt_state: Any) -> None:
  """Raises unless ``opt_state`` is shaped as ``opt.init(params)`` shapes it.

  Only shapes are compared (by ``jax.eval_shape``), so this costs no compute.

  Args:
    opt: the optimizer.
    params: the parameters the state should belong to.
    opt_state: a state, e.g. restored from elsewhere.

  Raises:
    ValueError: naming the state's differing structure or leaves.

  Example:
    >>> import jax.numpy as jnp, optax_gsm
    >>> opt = optax_gsm.gsm_sgd(0.1, compression=2)
    >>> state = opt.init({"w": jnp.ones((2, 2))})
    >>> check_opt_state(opt, {"w": jnp.ones((3, 2))}, state)
    Traceback (most recent call last):
    ...
    ValueError: opt_state does not belong to these params: opt_state [2].trace['w']: checkpoint has [[2, 2], 'float32'], this run has [[3, 2], 'float32']
  """
  expected = jax.eval_shape(opt.init, params)
  if jax.tree.structure(expected) != jax.tree.structure(opt_state):
    raise ValueError(
        "opt_state does not belong to these params: its structure is "
        f"{jax.tree.structure(opt_state)}, but opt.init(params) gives "
        f"{jax.tree.structure(expected)}.")
  lines = _differences({"opt_state": _leaf_specs(opt_state)},
                       {"opt_state": _leaf_specs(expected)})
  if lines:
    raise ValueError("opt_state does not belong to these params: "
                     + "; ".join(lines[:_MAX_LISTED]))


def _abstract_state(opt: optax.GradientTransformation, params: Any) -> Any:
  """``opt.init(params)`` as ShapeDtypeStructs with the shardings it gets."""
  shapes = jax.eval_shape(opt.init, params)
  shardings = jax.jit(opt.init).lower(params).compile().output_shardings
  return jax.tree.map(
      lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                               sharding=sharding),
      shapes, shardings)


def _abstract(tree: Any) -> Any:
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(jax.numpy.shape(x),
                                     jax.numpy.result_type(x),
                                     sharding=getattr(x, "sharding", None)),
      tree)


def _check_ratio(params: Any, opt_state: Any, hyperparams: dict) -> None:
  """Raises if the ratio in ``hyperparams`` keeps another Q than the state."""
  ratio = {k: hyperparams.get(k) for k in ("compression", "density",
                                            "sparsity")}
  if all(v is None for v in ratio.values()):
    return
  compression, density = _pool.canonical_ratio(*ratio.values(),
                                               "checkpoint.save")
  found = metrics.kept_and_pool(opt_state, params)
  if found is None:  # no GSMState, or not updated yet: nothing to compare
    return
  kept, pool = found
  want = _pool.num_kept(pool, compression, density, "checkpoint.save")
  if int(want) != kept:
    given = ", ".join(f"{k}={v!r}" for k, v in ratio.items() if v is not None)
    raise ValueError(
        f"checkpoint.save: {given} keeps {int(want)} of {pool} entries, but "
        f"the GSM state keeps {kept} (compression {pool / kept:.6g}); save "
        "with the ratio the optimizer was built with.")


def save(manager: Any, step: int, params: Any, opt_state: Any,
         **hyperparams: Any) -> bool:
  """Saves params and optimizer state with their description.

  Args:
    manager: an ``orbax.checkpoint.CheckpointManager``. Its saves are atomic:
      a save killed part-way leaves the previous checkpoints readable.
    step: the training step.
    params: the parameters.
    opt_state: the optimizer state.
    **hyperparams: numbers or strings :func:`restore` must find again, e.g.
      ``compression=10``. A ratio (``compression``, ``density`` or
      ``sparsity``) must keep the Q entries that the GSM state in
      ``opt_state`` counts as active (once updated); with an injected
      schedule, give the ratio of this step.

  Returns:
    Whether the manager saved (it may skip steps by its save interval).

  Raises:
    ValueError: if the ratio disagrees with the GSM state's.

  Example:
    >>> import tempfile, jax.numpy as jnp, optax_gsm
    >>> import orbax.checkpoint as ocp
    >>> params = {"w": jnp.arange(6.0).reshape(2, 3)}
    >>> opt = optax_gsm.gsm_sgd(0.1, compression=2)
    >>> with ocp.CheckpointManager(tempfile.mkdtemp()) as manager:
    ...   _ = save(manager, 7, params, opt.init(params), compression=2)
    ...   manager.wait_until_finished()
    ...   restored, _ = restore(manager, params, opt, compression=2)
    >>> restored["w"].tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
  """
  _check_ratio(params, opt_state, hyperparams)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  description = describe(params, opt_state, **hyperparams)
  return manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave({"params": params, "opt_state": opt_state}),
      description=ocp.args.JsonSave(description)))


def restore(manager: Any, params: Any, opt: optax.GradientTransformation, *,
            step: int | None = None, **hyperparams: Any) -> tuple[Any, Any]:
  """Restores params and optimizer state saved by :func:`save`.

  The checkpoint's description is checked first, so a checkpoint written for
  another model, optimizer or hyperparameters raises a ``ValueError`` naming
  the difference, and nothing is read.

  Args:
    manager: an ``orbax.checkpoint.CheckpointManager``.
    params: parameters of this run, or ``jax.ShapeDtypeStruct`` s; their
      shapes, dtypes and shardings are those restored.
    opt: the optimizer; ``opt.init(params)`` gives the state's layout.
    step: the step to restore; the latest by default.
    **hyperparams: as given to :func:`save`.

  Returns:
    ``(params, opt_state)``; see :func:`save` for an example.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  if step is None:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {manager.directory}.")
  abstract = {"params": _abstract(params),
              "opt_state": _abstract_state(opt, params)}
  saved = manager.restore(step, args=ocp.args.Composite(
      description=ocp.args.JsonRestore()))["description"]
  check_compatible(saved, describe(abstract["params"], abstract["opt_state"],
                                   **hyperparams))
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract)))["state"]
  return restored["params"], restored["opt_state"]
