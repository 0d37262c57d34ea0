"""Exact global top-k selection over the leaves of a pytree.

Every method here returns the same mask: the ``k`` largest scores over all
leaves taken together, ties broken toward the lower global index (leaf order as
``jax.tree.leaves`` gives it, then row-major within a leaf), NaN below every
number and ``-0.0`` equal to ``0.0``. That is the mask ``jax.lax.top_k`` gives
on the concatenated, flattened scores.

``"histogram"`` (what ``"auto"`` runs on the CPU) never concatenates: it finds the k-th largest
order-preserving integer key T by two 16-bit radix passes whose per-leaf
histograms (uint32 counts) are summed, then keeps ``key > T`` and, of the keys
equal to T, the ``need`` with the lowest global index. A ``lax.cond`` skips
that tie-break when every tie fits; otherwise the tie indices are counted in
``2**20`` blocks (one histogram pass, a second one inside the chosen block
above ``2**20`` entries). Each leaf's mask keeps its leaf's shape (and
sharding), and ``k`` may be a traced value.

``"radix_count"`` finds the same threshold without scatter: each pass
compares the keys against the ``2**b - 1`` candidate thresholds
``T + j * 2**shift`` of the next ``b``-bit digit and sums the comparisons
(plain reductions, so a sharded pool all-reduces ``2**b - 1`` counts), and the
tie-break is the same compare-and-count search over the global index of the
tied keys. It reads the keys ``ceil(32 / b)`` times (``ceil(64 / b)`` for
float64 scores), plus ``ceil(log2(N) / b)`` times when the ties at the
threshold do not all fit; ``b = 4`` by default. ``"auto"`` (the default) is
``"histogram"`` when compiled for the CPU and ``"radix_count"`` elsewhere
(GPU, TPU), where scatter-adds into a histogram are slow.

``"top_k"`` and ``"sort"`` concatenate and sort; they are kept as references
and for comparison.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SELECTIONS = ("histogram", "radix_count", "top_k", "sort")
# "auto" (or None): "histogram" when compiled for the CPU, "radix_count" on
# every other platform; chosen at lowering time (jax.lax.platform_dependent).
AUTO = "auto"
# Bits of the key that one "radix_count" pass resolves (2**b - 1 compares per
# entry and pass); see benchmarks/selection.py and docs/accelerators.md.
COUNT_BITS = (1, 2, 3, 4, 5, 6, 7, 8)
DEFAULT_COUNT_BITS = 4

_DIGIT_BITS = 16
_NUM_BINS = 1 << _DIGIT_BITS
# Counts are uint32, so a pool may hold up to 2**32 - 1 entries.
MAX_POOL_SIZE = (1 << 32) - 1
# Ties at the threshold are ranked by index in blocks: at most 2**20 blocks.
_BLOCK_BITS = 20
_DROP = np.uint32(0xFFFFFFFF)  # a bin index that the scatter drops


def check_selection(selection: str | None, traced_k: bool = False,
                    bits_per_pass: int | None = None) -> None:
  """Raises unless ``selection`` names a method that can serve this k.

  Args:
    selection: the method's name, ``"auto"`` or ``None`` (the same).
    traced_k: whether k will be a traced value (a schedule or an injected
      hyperparameter), which ``"top_k"`` cannot take.
    bits_per_pass: ``None``, or the digit width of ``"radix_count"`` (also
      taken by ``"auto"``), one of :data:`COUNT_BITS`.
  """
  if selection is None:
    selection = AUTO
  allowed = tuple(s for s in SELECTIONS if not (traced_k and s == "top_k"))
  allowed += (AUTO,)
  if not isinstance(selection, str) or selection not in allowed:
    reason = " (k is traced here)" if traced_k and selection == "top_k" else ""
    raise ValueError(f"unknown selection {selection!r}{reason}; expected one "
                     f"of {allowed} or None.")
  if bits_per_pass is None:
    return
  if selection not in ("radix_count", AUTO):
    raise ValueError(
        f"bits_per_pass={bits_per_pass!r} applies to selection='radix_count' "
        f"(or 'auto') only, not {selection!r}; allowed for {selection!r}: "
        "None.")
  if (isinstance(bits_per_pass, (bool, np.bool_))
      or not isinstance(bits_per_pass, numbers.Integral)
      or int(bits_per_pass) not in COUNT_BITS):
    raise ValueError(
        f"bits_per_pass={bits_per_pass!r} cannot be used by "
        f"selection='radix_count'; expected one of {COUNT_BITS} (or None for "
        f"{DEFAULT_COUNT_BITS}).")


def ordered_key(scores: jax.Array) -> jax.Array:
  """Maps floating scores to unsigned integer keys with the same order.

  NaN maps to 0, below every number (``-inf`` included); ``-0.0`` maps to the
  key of ``0.0``. Scores of 32 bits or fewer give ``uint32`` keys, ``float64``
  scores give ``uint64`` keys.

  Args:
    scores: a floating array.

  Returns:
    An unsigned integer array of the same shape whose order, as unsigned
    integers, is the order of ``scores``.

  Example:
    >>> import jax.numpy as jnp
    >>> k = ordered_key(jnp.array([jnp.nan, -jnp.inf, -1.0, -0.0, 0.0, 2.0]))
    >>> bool(jnp.all(k[1:] >= k[:-1])), int(k[0]), bool(k[3] == k[4])
    (True, 0, True)
  """
  if not jnp.issubdtype(scores.dtype, jnp.floating):
    raise TypeError(
        f"scores must have a floating dtype, got {scores.dtype}; cast them "
        "to float32 first.")
  if jnp.dtype(scores.dtype).itemsize > 4:
    float_dtype, uint_dtype = jnp.float64, jnp.uint64
  else:
    float_dtype, uint_dtype = jnp.float32, jnp.uint32
  x = scores.astype(float_dtype)
  bits = jax.lax.bitcast_convert_type(x, uint_dtype)
  top = jnp.iinfo(uint_dtype).bits - 1
  sign = jnp.asarray(1, uint_dtype) << top
  # On bits, not floats: XLA:CPU treats subnormals as zero in comparisons.
  bits = jnp.where(bits == sign, jnp.zeros((), uint_dtype), bits)  # -0 -> +0
  key = jnp.where((bits >> top) == 1, ~bits, bits | sign)
  return jnp.where(jnp.isnan(x), jnp.zeros((), uint_dtype), key)


def pick_digit(hist: jax.Array, above: jax.Array,
               k: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Chooses the digit of the k-th largest key from one radix histogram.

  ``hist[d]`` counts the keys that share the prefix chosen so far and have
  digit ``d``; ``above`` counts the keys with a larger prefix. All counts are
  ``uint32``, so they stay exact up to ``2**32 - 1`` keys.

  Args:
    hist: ``uint32[B]`` histogram of the current digit.
    above: ``uint32`` scalar, keys ranked above the current prefix.
    k: ``uint32`` scalar, ``above < k <= above + hist.sum()``.

  Returns:
    ``(digit, above, equal)``: the digit of the k-th largest key, the number
    of keys above that digit's bucket, and the bucket's count.
  """
  largest_first, above, equal = _locate(hist[::-1], above, k)
  return hist.shape[0] - 1 - largest_first, above, equal


def _histogram(keys: Sequence[jax.Array], bins: int,
               bin_fn: Callable[[jax.Array, int], jax.Array]) -> jax.Array:
  """``uint32[bins]`` histogram of ``bin_fn(key, offset)`` over all keys.

  ``offset`` is the global flat index of the key's first entry. ``bin_fn``
  returns uint32 bins (unsigned, so no wrap-around of negative indices is
  computed); bins ``>= bins``, such as ``_DROP``, are dropped.
  """
  hist = jnp.zeros(bins, jnp.uint32)
  offset = 0
  for key in keys:
    if key.size:
      # Replicated on the key's mesh: with explicit sharding (the default of
      # jax.make_mesh) the scatter needs its out_sharding.
      replicated = jax.typeof(key).sharding.update(
          spec=jax.sharding.PartitionSpec())
      hist = hist.at[bin_fn(key, offset)].add(jnp.uint32(1), mode="drop",
                                              out_sharding=replicated)
    offset += key.size
  return hist


def _digit_histogram(keys: Sequence[jax.Array], shift: int, prefix: jax.Array,
                     ) -> jax.Array:
  """Sums per-leaf histograms of the 16-bit digit at ``shift``, within prefix."""
  def digit_bin(key, _):
    digit = ((key >> shift) & (_NUM_BINS - 1)).astype(jnp.uint32)
    if shift + _DIGIT_BITS >= jnp.iinfo(key.dtype).bits:  # the first digit
      return digit
    in_prefix = (key >> (shift + _DIGIT_BITS)) == prefix.astype(key.dtype)
    return jnp.where(in_prefix, digit, _DROP)

  return _histogram(keys, _NUM_BINS, digit_bin)


def kth_largest_key(keys: Sequence[jax.Array], k: jax.Array,
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The k-th largest key over all leaves, by 16-bit radix select.

  Args:
    keys: unsigned integer arrays of one dtype, any shapes.
    k: ``uint32`` scalar with ``1 <= k <= total size``.

  Returns:
    ``(threshold, greater, equal)``: the k-th largest key, how many keys are
    larger, and how many equal it.
  """
  key_dtype = keys[0].dtype
  bits = jnp.iinfo(key_dtype).bits
  prefix = jnp.zeros((), key_dtype)
  above = jnp.zeros((), jnp.uint32)
  equal = jnp.zeros((), jnp.uint32)
  for shift in range(bits - _DIGIT_BITS, -1, -_DIGIT_BITS):
    hist = _digit_histogram(keys, shift, prefix)
    digit, above, equal = pick_digit(hist, above, k)
    prefix = (prefix << _DIGIT_BITS) | digit.astype(key_dtype)
  return prefix, above, equal


def _flat_index(shape: tuple[int, ...], offset: int) -> jax.Array:
  """``offset`` plus the row-major flat index of every entry, as uint32."""
  index = jnp.full(shape, offset, jnp.uint32)
  stride = 1
  for dim in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, dim) * stride
    stride *= shape[dim]
  return index


def _locate(hist: jax.Array, before: jax.Array, k: jax.Array,
            ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """First bin ``b`` with ``before + sum(hist[:b + 1]) >= k``.

  ``hist`` is in descending key order (bin 0 holds the largest keys). Long
  histograms are searched in two levels of 1024 bins, since a long cumsum is
  slow on CPU.

  Returns:
    ``(b, before + sum(hist[:b]), hist[b])``.
  """
  size = hist.shape[0]
  if size > 4096 and size % 1024 == 0:
    rows = hist.reshape(-1, 1024)
    row, before, _ = _locate(jnp.sum(rows, axis=1, dtype=jnp.uint32), before,
                             k)
    col, before, equal = _locate(rows[row], before, k)
    return row * 1024 + col, before, equal
  at_most = before + jnp.cumsum(hist, dtype=jnp.uint32)
  b = jnp.minimum(jnp.sum(at_most < k, dtype=jnp.int32), size - 1)
  equal = hist[b]
  return b, at_most[b] - equal, equal


def _histogram_masks(keys: list[jax.Array], k: jax.Array) -> list[jax.Array]:
  k_safe = jnp.maximum(k, 1)
  threshold, greater, equal = kth_largest_key(keys, k_safe)
  return masks_at_threshold(keys, k, threshold, greater, equal)


def _masks_up_to(keys: list[jax.Array], k: jax.Array, threshold: jax.Array,
                 all_ties_fit: jax.Array,
                 last_tie: Callable[[None], jax.Array]) -> list[jax.Array]:
  """``key > threshold``, plus the ties at the threshold up to global index
  ``last_tie()`` (skipped by a ``lax.cond`` when every tie fits); ``k = 0``
  keeps nothing."""
  total = sum(key.size for key in keys)
  cut = jax.lax.cond(all_ties_fit, lambda _: jnp.uint32(total - 1), last_tie,
                     None)
  masks = []
  offset = 0
  for key in keys:
    tie_kept = (key == threshold) & (_flat_index(key.shape, offset) <= cut)
    masks.append(((key > threshold) | tie_kept) & (k > 0))
    offset += key.size
  return masks


def masks_at_threshold(keys: list[jax.Array], k: jax.Array,
                       threshold: jax.Array, greater: jax.Array,
                       equal: jax.Array) -> list[jax.Array]:
  """The top-k masks, given the k-th largest key as :func:`kth_largest_key`
  returns it: ``key > threshold``, and of the ``equal`` keys at the threshold
  the ``k - greater`` with the lowest global index. ``k = 0`` keeps nothing.
  """
  k_safe = jnp.maximum(k, 1)
  total = sum(key.size for key in keys)
  need = k_safe - greater  # 1 <= need <= equal


  def last_tie(_):
    # The global index of the need-th tie (key == threshold) in index order,
    # by a histogram of tie indices in blocks of 2**shift, then one inside
    # the chosen block when blocks hold more than one index.
    index_bits = max(1, (total - 1).bit_length())
    shift = max(0, index_bits - _BLOCK_BITS)

    def block_bin(piece, offset):
      index = _flat_index(piece.shape, offset) >> shift
      return jnp.where(piece == threshold, index, _DROP)

    hist = _histogram(keys, 1 << (index_bits - shift), block_bin)
    block, before, _ = _locate(hist, jnp.zeros((), jnp.uint32), need)
    start = block.astype(jnp.uint32) << shift
    if shift == 0:
      return start

    def index_bin(piece, offset):
      index = _flat_index(piece.shape, offset) - start
      inside = (piece == threshold) & (index < (1 << shift))
      return jnp.where(inside, index, _DROP)

    hist = _histogram(keys, 1 << shift, index_bin)
    last, _, _ = _locate(hist, before, need)
    return start + last.astype(jnp.uint32)

  return _masks_up_to(keys, k, threshold, need == equal, last_tie)


def _variadic_counts() -> bool:
  """Whether ``_count`` uses the variadic reduce: with a single device."""
  return jax.device_count() == 1


def _count(keys: Sequence[jax.Array], thresholds: jax.Array,
           term: Callable[[jax.Array, int, jax.Array], jax.Array],
           ) -> jax.Array:
  """``uint32[J]``: ``sum over leaves and entries of term(key, offset, t_j)``.

  One reduction per leaf and pass, over the leaf's own axes (never
  flattened: a sharded leaf stays in place). On one device it is a variadic
  ``lax.reduce`` of the ``J`` compares: one read of the keys and no
  ``(N, J)`` intermediate (CPU, 4M keys, ``J = 15``: 14 ms and no scratch,
  against 199 ms and 252 MB for the sum of a ``[..., J]`` broadcast compare,
  which XLA:CPU materialises). With several devices it is that sum, since
  the SPMD partitioner turns it into an all-reduce of the ``J`` counts but
  a variadic reduce into all-gathers of per-device partials.
  """
  width = thresholds.shape[0]
  variadic = _variadic_counts()
  counts = jnp.zeros((width,), jnp.uint32)
  offset = 0
  for key in keys:
    if key.size and variadic:
      sums = jax.lax.reduce(
          tuple(term(key, offset, thresholds[j]).astype(jnp.uint32)
                for j in range(width)),
          tuple(jnp.zeros((), jnp.uint32) for _ in range(width)),
          lambda xs, ys: tuple(x + y for x, y in zip(xs, ys)),
          tuple(range(key.ndim)))
      counts = counts + jnp.stack(sums)
    elif key.size:
      hit = term(key[..., None], offset, thresholds)
      counts = counts + jnp.sum(hit, axis=tuple(range(key.ndim)),
                                dtype=jnp.uint32)
    offset += key.size
  return counts


def _radix_search(bits: int, bits_per_pass: int, dtype: Any,
                  counts_fn: Callable[[jax.Array], jax.Array],
                  accept: Callable[[jax.Array], jax.Array], at_zero: int,
                  ) -> tuple[jax.Array, jax.Array]:
  """The largest ``t`` in ``[0, 2**bits)`` whose count ``accept``s.

  ``at_zero`` is the count at ``t = 0`` (known without a pass).
  ``accept(counts_fn(t))`` must hold at ``t = 0`` and, as ``t`` grows, hold
  on a prefix of values only. Each pass tries the ``2**b - 1`` thresholds
  ``t + j * 2**shift`` of the next digit at once; the digit is the number
  accepted. A first pass takes the ``bits % b`` top bits, then a
  ``lax.fori_loop`` the full digits (one compiled pass, however many).

  Returns:
    ``(t, counts)``: the threshold, and ``uint32[2]`` counts at ``t`` and at
    ``t + 1`` (the latter 0 when ``t + 1 == 2**bits``).
  """
  def one_pass(width, shift, carry):
    base, at_base, above = carry
    steps = jnp.arange(1, 1 << width, dtype=dtype) << shift.astype(dtype)
    counts = counts_fn(base + steps)
    digit = jnp.sum(accept(counts), dtype=jnp.int32)
    padded = jnp.concatenate([at_base[None], counts, above[None]])
    return (base + (digit.astype(dtype) << shift.astype(dtype)),
            padded[digit], padded[digit + 1])

  zero = jnp.zeros((), dtype)
  # Counts at 0 and at 2**bits, the ends of the range.
  carry = (zero, jnp.asarray(at_zero, jnp.uint32), jnp.zeros((), jnp.uint32))
  if bits % bits_per_pass:
    carry = one_pass(bits % bits_per_pass,
                     jnp.asarray(bits - bits % bits_per_pass), carry)
  full = bits // bits_per_pass
  carry = jax.lax.fori_loop(
      0, full, lambda i, c: one_pass(
          bits_per_pass, (full - 1 - i) * bits_per_pass, c), carry)
  base, at_base, above = carry
  return base, jnp.stack([at_base, above])


def _count_masks(keys: list[jax.Array], k: jax.Array,
                 bits_per_pass: int) -> list[jax.Array]:
  """``"radix_count"``: compare-and-count radix select, no scatter."""
  key_dtype = keys[0].dtype
  k_safe = jnp.maximum(k, 1)
  total = sum(key.size for key in keys)

  def at_least(thresholds):
    return _count(keys, thresholds, lambda key, _, t: key >= t)

  threshold, (at_or_above, greater) = _radix_search(
      jnp.iinfo(key_dtype).bits, bits_per_pass, key_dtype, at_least,
      lambda counts: counts >= k_safe, total)
  equal = at_or_above - greater
  need = k_safe - greater  # 1 <= need <= equal

  def last_tie(_):
    # The index of the need-th tie is the largest t with fewer than need
    # ties below it.
    def ties_below(thresholds):
      def term(key, offset, t):
        return (key == threshold) & (_flat_index(key.shape, offset) < t)
      return _count(keys, thresholds, term)

    cut, _ = _radix_search(max(1, (total - 1).bit_length()), bits_per_pass,
                           jnp.uint32, ties_below,
                           lambda counts: counts < need, 0)
    return cut

  return _masks_up_to(keys, k, threshold, need == equal, last_tie)


def _concatenated_masks(keys: list[jax.Array], k: Any,
                        method: str) -> list[jax.Array]:
  flat = jnp.concatenate([key.ravel() for key in keys])
  total = flat.size
  if total > jnp.iinfo(jnp.int32).max:
    raise ValueError(
        f'selection="{method}" indexes with int32 and takes at most 2**31 - 1 '
        f'entries; the pool holds {total}. Use selection="histogram".')
  if method == "top_k":
    if not isinstance(k, (int, np.integer)):
      raise TypeError(
          'selection="top_k" needs a static integer k (jax.lax.top_k has a '
          'static k); use selection="histogram" or "sort" for a traced '
          "compression or density.")
    # Flip the top bit so that signed order equals the keys' unsigned order.
    signed_dtype = jnp.int64 if flat.dtype == jnp.uint64 else jnp.int32
    top = jnp.iinfo(flat.dtype).bits - 1
    signed = jax.lax.bitcast_convert_type(
        flat ^ (jnp.asarray(1, flat.dtype) << top), signed_dtype)
    _, index = jax.lax.top_k(signed, int(k))
    flat_mask = jnp.zeros(total, bool).at[index].set(True)
  else:  # "sort": a stable argsort, descending, lower index first on ties.
    order = jnp.argsort(~flat, stable=True)
    rank_kept = jnp.arange(total, dtype=jnp.uint32) < k
    flat_mask = jnp.zeros(total, bool).at[order].set(rank_kept)
  splits = np.cumsum([key.size for key in keys])[:-1]
  return [piece.reshape(key.shape)
          for piece, key in zip(jnp.split(flat_mask, splits), keys)]


def _check_k(k: Any, total: int) -> Any:
  """An int k in [1, total], or a traced integer k clipped to [0, total]."""
  integer = isinstance(k, numbers.Integral) or (
      isinstance(k, (jax.Array, np.ndarray)) and jnp.ndim(k) == 0
      and jnp.issubdtype(k.dtype, jnp.integer))
  if isinstance(k, (bool, np.bool_)) or not integer:
    raise TypeError(f"k must be an int or a scalar integer array, got {k!r}.")
  if not isinstance(k, jax.core.Tracer):
    if not 1 <= int(k) <= total:
      raise ValueError(
          f"k={int(k)} must lie in [1, {total}] (the pool size); selecting no "
          "entry is almost always a mistake in the compression or density.")
    return int(k)
  if jnp.issubdtype(k.dtype, jnp.signedinteger):
    k = jnp.maximum(k, 0)
  if total < jnp.iinfo(k.dtype).max:
    k = jnp.minimum(k, jnp.asarray(total, k.dtype))
  return k.astype(jnp.uint32)


def top_k_masks(scores: Any, k: int | jax.Array, *,
                selection: str | None = AUTO,
                bits_per_pass: int | None = None) -> Any:
  """Boolean masks of the ``k`` largest scores over a whole pytree.

  The ranking is global: all leaves compete together. Exactly ``k`` entries
  are selected; ties go to the lower index in leaf order, then row-major
  within a leaf; NaN ranks below every number and ``-0.0`` equals ``0.0``.
  ``None`` leaves are skipped and stay ``None``.

  Args:
    scores: a pytree of floating arrays.
    k: how many entries to select: an int or a scalar integer array,
      ``1 <= k <= total size`` (else a ``ValueError``; a float k is a
      ``TypeError``). It may be traced for every method but ``"top_k"``: a
      traced k is clipped to ``[0, total size]``, 0 selecting nothing.
    selection: ``"auto"`` or ``None`` (the default: ``"histogram"`` when
      compiled for the CPU, ``"radix_count"`` on GPU and TPU, decided at
      lowering time by ``jax.lax.platform_dependent``), ``"histogram"``
      (16-bit radix select by scatter-add histograms, no concatenation),
      ``"radix_count"`` (radix select by compare-and-count reductions: no
      scatter, no concatenation), ``"top_k"`` (``jax.lax.top_k`` on the
      concatenation, the reference; concrete k only) or ``"sort"`` (a stable
      argsort of the concatenation).
    bits_per_pass: ``"radix_count"``'s digit width b in 1..8: each pass makes
      ``2**b - 1`` compares per entry and reads the keys once; ``None``
      means 4 (8 passes over float32 keys).

  Returns:
    A pytree of boolean arrays shaped like ``scores``.

  Example:
    >>> import jax.numpy as jnp
    >>> scores = {"a": jnp.array([3.0, 1.0]), "b": jnp.array([[1.0, 5.0]])}
    >>> masks = top_k_masks(scores, 2)
    >>> masks["a"].tolist(), masks["b"].tolist()
    ([True, False], [[False, True]])
  """
  check_selection(selection, bits_per_pass=bits_per_pass)
  if selection is None:
    selection = AUTO
  bits = DEFAULT_COUNT_BITS if bits_per_pass is None else int(bits_per_pass)
  leaves, treedef = jax.tree.flatten(scores)
  if not leaves:
    raise ValueError("scores has no leaves to select from.")
  keys = [ordered_key(jnp.asarray(leaf)) for leaf in leaves]
  key_dtypes = {key.dtype for key in keys}
  if len(key_dtypes) > 1:  # float64 beside narrower floats: widen them all
    keys = [ordered_key(jnp.asarray(leaf, jnp.float64)) for leaf in leaves]
  total = sum(key.size for key in keys)
  if total > MAX_POOL_SIZE:
    raise ValueError(
        f"the pool holds {total} entries; at most {MAX_POOL_SIZE} are "
        "supported (counts are uint32).")
  k = _check_k(k, total)
  if isinstance(k, int) and k == total:
    return jax.tree.unflatten(treedef,
                              [jnp.ones_like(key, bool) for key in keys])
  if selection in ("histogram", "radix_count", AUTO):
    k = jnp.asarray(k, jnp.uint32)
    count = lambda keys, k: _count_masks(keys, k, bits)
    if selection == "histogram":
      masks = _histogram_masks(keys, k)
    elif selection == "radix_count":
      masks = count(keys, k)
    else:
      masks = jax.lax.platform_dependent(keys, k, cpu=_histogram_masks,
                                         default=count)
  else:
    masks = _concatenated_masks(keys, k, selection)
  return jax.tree.unflatten(treedef, masks)
