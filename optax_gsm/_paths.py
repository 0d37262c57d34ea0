"""Leaf paths that read the same for dicts, Linen params and ``nnx.State``.

A Flax NNX ``nnx.Variable`` (``nnx.Param``, and the ``OptVariable`` that
``nnx.Optimizer`` keeps) flattens to its array under the key ``.value``, so
``nnx.state(model, nnx.Param)`` gives paths such as ``l1/kernel/value``,
while the pure arrays ``nnx.Optimizer`` hands to ``tx.update`` give
``l1/kernel``. Dropping that last key makes the two, and a plain dict of the
same layout, name every leaf alike.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

_VALUE = jax.tree_util.GetAttrKey("value")


def is_none(x: Any) -> bool:
  """``is_leaf`` for trees whose ``None`` entries stand for leaves."""
  return x is None


def is_masked_node(x: Any) -> bool:
  """``is_leaf`` for the ``optax.MaskedNode`` that ``optax.masked`` and
  ``optax.multi_transform`` hand over for the other group's leaves."""
  return isinstance(x, optax.MaskedNode)


def clean(path: tuple) -> tuple:
  """``path`` without the trailing ``.value`` of an ``nnx.Variable``."""
  return path[:-1] if path and path[-1] == _VALUE else path


def name(path: tuple, *, drop_collection: bool = False) -> str:
  """A leaf's name, e.g. ``l1/kernel``, as ``keystr(simple=True)`` writes it.

  Args:
    path: a key path from ``jax.tree_util.tree_flatten_with_path``.
    drop_collection: also drop a leading ``params`` key (Linen's collection).

  Returns:
    The keys of the cleaned path joined by ``/``.

  Example:
    >>> import jax
    >>> path = (jax.tree_util.DictKey("l1"), jax.tree_util.DictKey("kernel"),
    ...         jax.tree_util.GetAttrKey("value"))
    >>> name(path)
    'l1/kernel'
  """
  path = clean(path)
  if drop_collection and path and path[0] == jax.tree_util.DictKey("params"):
    path = path[1:]
  return jax.tree_util.keystr(path, simple=True, separator="/")


def names(tree: Any) -> list[str]:
  """The :func:`name` of every leaf of ``tree``, in ``jax.tree.leaves`` order.

  Example:
    >>> import jax.numpy as jnp
    >>> names({"l1": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}})
    ['l1/bias', 'l1/kernel']
  """
  return [name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _under(leaf: str, prefix: str) -> bool:
  return not prefix or leaf == prefix or leaf.startswith(prefix + "/")


def flags_by_path(tree: Any, params: Any) -> list[Any] | None:
  """The leaf of ``tree`` at (or above) each leaf of ``params``, by name.

  ``tree`` may be a prefix of ``params`` and may wrap its leaves differently
  (``nnx.Variable`` or not, an ``nnx.State`` or a dict): each leaf of
  ``params`` takes the leaf of ``tree`` whose :func:`name` is its own or
  the deepest one above it.

  Args:
    tree: a pytree, e.g. of bools.
    params: the tree it stands for.

  Returns:
    One leaf of ``tree`` per leaf of ``params`` (``jax.tree.leaves`` order),
    or ``None`` if some leaf of ``params`` has no match or some leaf of
    ``tree`` matches nothing.

  Example:
    >>> import jax.numpy as jnp
    >>> params = {"l1": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
    >>> flags_by_path({"l1": True}, params)
    [True, True]
  """
  by_name = dict(zip(names(tree), jax.tree.leaves(tree)))
  out, used = [], set()
  for leaf in names(params):
    match = max((k for k in by_name if _under(leaf, k)), key=len,
                default=None)
    if match is None:
      return None
    used.add(match)
    out.append(by_name[match])
  return out if used == set(by_name) else None


def align(masks: Any, params: Any) -> Any:
  """``masks`` rearranged into the structure of ``params``, matched by path.

  Masks built on ``nnx.state(model, nnx.Param)`` hold ``nnx.Variable``
  wrappers (or are a pure dict from ``nnx.to_pure_dict``) while
  ``nnx.Optimizer`` passes ``tx.update`` pure arrays in an ``nnx.State``: the
  leaves are the same, the containers are not. Each mask (``None`` included)
  is matched to the leaf of ``params`` with the same cleaned path. Trees of
  one structure are returned unchanged; if the paths do not match either,
  ``masks`` is returned as it is, for the caller's own check to report.

  Args:
    masks: bool arrays, or ``None`` for leaves left alone.
    params: the tree the masks stand for.

  Returns:
    A tree of ``params``' structure (``None`` as a leaf) holding the masks.
  """
  if (jax.tree.structure(masks, is_leaf=is_none)
      == jax.tree.structure(params, is_leaf=is_none)):
    return masks
  by_path = {clean(p): m for p, m in
             jax.tree_util.tree_flatten_with_path(masks, is_leaf=is_none)[0]}
  flat, treedef = jax.tree_util.tree_flatten_with_path(params,
                                                       is_leaf=is_none)
  paths = [clean(p) for p, _ in flat]
  if len(set(paths)) != len(paths) or not set(paths) <= set(by_path):
    return masks
  # Masks of leaves params lack (an nnx.BatchStat of nnx.state(model) when
  # the optimizer holds only nnx.Param) are dropped if they are None.
  if any(by_path[p] is not None for p in set(by_path) - set(paths)):
    return masks
  return treedef.unflatten([by_path[p] for p in paths])


def mismatch(masks: Any, params: Any, limit: int = 4) -> str:
  """The leaf names where ``masks`` and ``params`` differ, for an error.

  Example:
    >>> mismatch({"a": None, "b": None}, {"a": 1.0, "c": 2.0})
    'masks have b, which params lack; params have c, which masks lack'
  """
  def names(tree):
    return [name(p) for p, _ in
            jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)[0]]
  have, want = names(masks), names(params)
  extra = [n for n in have if n not in want]
  missing = [n for n in want if n not in have]
  def listed(items):
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
  parts = []
  if extra:
    nones = [n for n, (_, m) in zip(
        have, jax.tree_util.tree_flatten_with_path(masks, is_leaf=is_none)[0])
             if n in extra and m is not None]
    parts.append(f"masks have {listed(extra)}, which params lack"
                 + (f" (with a mask, not None: {listed(nones)})"
                    if nones else ""))
  if missing:
    parts.append(f"params have {listed(missing)}, which masks lack")
  return "; ".join(parts) or (
      f"the containers differ: {len(have)} mask leaves in "
      f"{type(masks).__name__}, {len(want)} param leaves in "
      f"{type(params).__name__}")
