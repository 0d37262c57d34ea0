"""Exact global top-k selection: histogram, radix_count, top_k and sort vs
numpy brute force."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import numpy_reference as ref
from optax_gsm import _selection
from optax_gsm import top_k_masks


_traced = jax.jit(lambda leaves, k: top_k_masks(leaves, k))
_count = jax.jit(
    lambda leaves, k, bits: top_k_masks(leaves, k, selection="radix_count",
                                        bits_per_pass=bits),
    static_argnums=2)
_reference = jax.jit(
    lambda leaves, k, selection: top_k_masks(leaves, k, selection=selection),
    static_argnums=(1, 2))


def assert_all_agree(leaves, ks, references=("top_k",)):
  """Histogram and radix_count (static k once, traced k always) ==
  references == numpy."""
  total = sum(np.size(x) for x in leaves)
  for i, k in enumerate(ks):
    expected = ref.top_k_flat(leaves, k)
    got = {"traced": _traced(leaves, jnp.uint32(k)),
           "radix_count": _count(leaves, jnp.uint32(k), None)}
    if i == 0:
      got["static"] = top_k_masks(leaves, k)
      got["static radix_count"] = top_k_masks(leaves, k,
                                              selection="radix_count")
      for bits in (1, 3, 8):  # 3: a first pass of 32 % 3 = 2 bits
        got[f"radix_count b={bits}"] = _count(leaves, jnp.uint32(k), bits)
    for method in references:
      got[method] = _reference(leaves, k, method)
    for name, masks in got.items():
      assert len(masks) == len(expected)
      for mask, want in zip(masks, expected):
        assert mask.dtype == jnp.bool_ and mask.shape == want.shape, name
        np.testing.assert_array_equal(np.asarray(mask), want,
                                      err_msg=f"{name} k={k}/{total}")
      assert sum(int(np.sum(m)) for m in masks) == k, name


def _ks(total):
  return sorted({1, 2, max(1, total // 3), max(1, total - 1), total})


def test_every_score_equal():
  for fill in (0.0, -0.0, 1.5, -2.0, np.inf, -np.inf, np.nan):
    leaves = [np.full((3, 4), fill, np.float32),
              np.full((5,), fill, np.float32)]
    assert_all_agree(leaves, _ks(17))


def test_zero_and_negative_zero_tie():
  a = np.array([0.0, -0.0, 1.0, -0.0, 0.0, -1.0], np.float32)
  assert_all_agree([a, -a[::-1]], [1, 2, 5, 6, 7, 9, 11, 12],
                   references=("top_k", "sort"))


def test_special_values():
  a = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.0,
                np.nan, np.inf, -np.inf, 3.0, np.finfo(np.float32).max,
                np.finfo(np.float32).min], np.float32)
  assert_all_agree([a.reshape(2, 7), a[::-1].copy()],
                   [1, 2, 3, 5, 6, 9, 11, 13, 17, 21, 23, 27, 28],
                   references=("top_k", "sort"))


def test_many_ties_at_threshold():
  rng = np.random.default_rng(0)
  leaves = [rng.integers(0, 4, (40, 30)).astype(np.float32),
            rng.integers(0, 4, (7,)).astype(np.float32),
            rng.integers(0, 4, (5, 6, 7)).astype(np.float32)]
  assert_all_agree(leaves, [1, 9, 640, 641, 1416, 1417])


def test_single_entry_and_empty_leaves():
  leaves = [np.array([2.0], np.float32), np.zeros((0, 3), np.float32),
            np.array([[5.0]], np.float32), np.zeros((0,), np.float32),
            np.array([2.0, 5.0, 1.0], np.float32)]
  assert_all_agree(leaves, [1, 2, 3, 4, 5], references=("top_k", "sort"))


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32])
def test_low_precision_dtypes(dtype):
  rng = np.random.default_rng(1)
  # Few distinct values: a 16-bit float has many exact ties.
  leaves = [(rng.standard_normal((30, 20)) * 3).astype(dtype),
            (rng.standard_normal((11,)) * 3).astype(dtype)]
  leaves[0][0, :5] = np.nan
  leaves[1][:3] = -0.0
  assert_all_agree(leaves, _ks(611))


def test_float64_scores():
  rng = np.random.default_rng(2)
  with jax.enable_x64(True):
    base = rng.standard_normal(50)
    # Distinct in float64, equal once rounded to float32.
    a = 1.0 + np.arange(50) * 1e-12
    leaves = [jnp.asarray(base.reshape(5, 10)), jnp.asarray(a),
              jnp.asarray(base[:7], jnp.float32)]
    fn = jax.jit(lambda leaves, k, method: top_k_masks(
        leaves, k, selection=method), static_argnums=2)
    for k in (1, 3, 20, 56, 57, 106, 107):
      want = ref.top_k_flat([np.asarray(x) for x in leaves], k)
      for method in ("histogram", "radix_count", "top_k"):
        got = (top_k_masks(leaves, k, selection=method) if method == "top_k"
               else fn(leaves, jnp.uint32(k), method))
        for mask, w in zip(got, want):
          np.testing.assert_array_equal(np.asarray(mask), w,
                                        err_msg=f"{method} k={k}")


def test_random_mixed_shape_pytrees():
  rng = np.random.default_rng(3)
  for _ in range(2):
    shapes = [tuple(rng.integers(1, 9, rng.integers(1, 4)))
              for _ in range(rng.integers(1, 6))]
    tree = {f"leaf{i}": (rng.standard_normal(s) * rng.choice([0, 1], s)
                         ).astype(np.float32) for i, s in enumerate(shapes)}
    leaves = jax.tree.leaves(tree)
    total = sum(x.size for x in leaves)
    assert_all_agree(leaves, [1, max(1, total // 3), total])
    masks = top_k_masks(tree, max(1, total // 2))
    assert jax.tree.structure(masks) == jax.tree.structure(tree)


def test_large_pool_exercises_every_pass():
  # Above 2**20 entries the tie-break needs its second (in-block) pass, and
  # continuous scores make the threshold's second radix digit matter.
  rng = np.random.default_rng(4)
  big = np.abs(rng.standard_normal((1100, 1000))).astype(np.float32)
  big[::3] = 0.0  # a third of the rows exactly zero: ties at 0
  small = np.zeros((7, 5), np.float32)
  leaves = [small, big]
  nonzero = int(np.count_nonzero(big))
  for k in (1000, nonzero, nonzero + 1, nonzero + 123_457, 1_100_034):
    want = ref.top_k_flat(leaves, k)
    got = {"histogram": _traced(leaves, jnp.uint32(k))}
    if k in (nonzero, nonzero + 123_457):  # ties at zero need 21 index bits
      got["radix_count"] = _count(leaves, jnp.uint32(k), None)
    for name, masks in got.items():
      for mask, w in zip(masks, want):
        np.testing.assert_array_equal(np.asarray(mask), w,
                                      err_msg=f"{name} k={k}")


@pytest.mark.parametrize("selection", ["auto", "histogram", "radix_count"])
def test_traced_k_does_not_recompile(selection):
  rng = np.random.default_rng(5)
  leaves = [rng.standard_normal((20, 10)).astype(np.float32),
            np.round(rng.standard_normal(30)).astype(np.float32)]
  fn = jax.jit(lambda leaves, k: top_k_masks(leaves, k, selection=selection))
  for k in (1, 17, 100, 229, 230):
    masks = fn(leaves, jnp.uint32(k))
    for mask, want in zip(masks, ref.top_k_flat(leaves, k)):
      np.testing.assert_array_equal(np.asarray(mask), want)
  assert fn._cache_size() == 1  # pylint: disable=protected-access
  # A traced k outside [1, N] is clipped: 0 selects nothing, more selects all.
  assert not any(np.any(m) for m in fn(leaves, jnp.uint32(0)))
  assert all(np.all(m) for m in fn(leaves, jnp.uint32(10_000)))


def test_bad_arguments():
  leaves = [jnp.ones(4)]
  for k in (0, -1, 5):
    with pytest.raises(ValueError, match="k="):
      top_k_masks(leaves, k)
  with pytest.raises(ValueError, match="selection"):
    top_k_masks(leaves, 1, selection="quickselect")
  allowed = r"\('histogram', 'radix_count', 'top_k', 'sort', 'auto'\)"
  with pytest.raises(ValueError, match="'radix';.*" + allowed):
    top_k_masks(leaves, 1, selection="radix")
  for bits in (0, 9, 16, 2.0, True, "4"):
    with pytest.raises(ValueError,
                       match=r"bits_per_pass=.* expected one of \(1, 2, 3, 4, "
                       r"5, 6, 7, 8\)"):
      top_k_masks(leaves, 1, selection="radix_count", bits_per_pass=bits)
  for selection in ("histogram", "top_k", "sort"):
    with pytest.raises(ValueError, match="bits_per_pass=4 applies to "
                       "selection='radix_count'.*allowed for.*None"):
      top_k_masks(leaves, 1, selection=selection, bits_per_pass=4)
  with pytest.raises(TypeError, match="floating"):
    top_k_masks([jnp.ones(4, jnp.int32)], 1)
  with pytest.raises(TypeError, match="static integer k"):
    jax.jit(lambda x, k: top_k_masks(x, k, selection="top_k"))(
        leaves, jnp.uint32(1))
  with pytest.raises(ValueError, match="no leaves"):
    top_k_masks({}, 1)


def test_pick_digit_counts_beyond_int32():
  big = 2**31 + 5  # one bucket alone overflows int32
  hist = jnp.array([7, big, 0, 2**30, 3], jnp.uint32)  # digits 0..4
  above = jnp.uint32(11)
  # Keys rank from digit 4 down: 3 keys, then 2**30, then 0, then big, then 7.
  cases = {
      12: (4, 11, 3),
      14: (4, 11, 3),
      15: (3, 14, 2**30),
      14 + 2**30: (3, 14, 2**30),
      15 + 2**30: (1, 14 + 2**30, big),
      14 + 2**30 + big: (1, 14 + 2**30, big),
      15 + 2**30 + big: (0, 14 + 2**30 + big, 7),
  }
  for k, want in cases.items():
    assert k < 2**32
    digit, greater, equal = _selection.pick_digit(hist, above, jnp.uint32(k))
    assert (int(digit), int(greater), int(equal)) == want, k
  assert _selection.MAX_POOL_SIZE == 2**32 - 1


def test_ordered_key_is_monotone():
  values = np.array([np.nan, -np.inf, -3.0, -1e-45, -0.0, 0.0, 1e-45, 2.0,
                     np.inf], np.float32)
  keys = np.asarray(_selection.ordered_key(jnp.asarray(values)))
  assert keys.dtype == np.uint32
  assert np.all(np.diff(keys[1:].astype(np.int64)) >= 0)
  assert keys[0] < keys[1] and keys[4] == keys[5]


@pytest.mark.parametrize("selection", _selection.SELECTIONS)
def test_k_must_be_an_integer_and_all_methods_agree_on_range(selection):
  scores = [jnp.asarray(np.random.default_rng(0).random(5), jnp.float32)]
  for k in (2.5, 0.5, jnp.float32(3.0), True, jnp.ones(2, jnp.int32)):
    with pytest.raises(TypeError, match="k must be an int"):
      top_k_masks(scores, k, selection=selection)
  for k in (0, 6, jnp.uint32(3_000_000_000), np.int64(-1)):
    with pytest.raises(ValueError, match="must lie in"):
      top_k_masks(scores, k, selection=selection)
  for k in (1, np.int64(3), jnp.int32(4), jnp.uint8(5)):  # concrete: exact
    np.testing.assert_array_equal(top_k_masks(scores, k, selection=selection)[0],
                                  ref.top_k_flat(scores, int(k))[0])
  if selection == "top_k":
    return  # static k only
  traced = jax.jit(lambda k: top_k_masks(scores, k, selection=selection)[0])
  for k, want in ((jnp.uint32(3_000_000_000), 5), (jnp.int32(-7), 0),
                  (jnp.int32(3), 3), (jnp.uint8(200), 5)):
    np.testing.assert_array_equal(traced(k), ref.top_k_flat(scores, want)[0])


def _adversarial_leaves(rng, dtype):
  """A random pytree's leaves drawn from a few values, with the specials."""
  specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45,
                       1e-40, np.finfo(np.float32).max, 1.0, 1.0, 2.0, -3.0],
                      np.float32)
  leaves = []
  for _ in range(rng.integers(1, 6)):
    shape = tuple(rng.integers(1, 7, rng.integers(0, 3)))
    values = np.where(rng.random(shape) < 0.5, rng.choice(specials, shape),
                      rng.standard_normal(shape).astype(np.float32))
    with np.errstate(over="ignore"):  # float32 max is inf in 16 bits
      leaves.append(np.asarray(values).astype(dtype))
  return leaves


@pytest.mark.parametrize("variadic", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
def test_radix_count_fuzz_against_brute_force(dtype, variadic, monkeypatch):
  # Both count formulations: the variadic reduce (one device) and the sum
  # of a broadcast compare (several devices, as in these tests).
  monkeypatch.setattr(_selection, "_variadic_counts", lambda: variadic)
  count = jax.jit(lambda leaves, k, bits: top_k_masks(
      leaves, k, selection="radix_count", bits_per_pass=bits),
                  static_argnums=2)
  rng = np.random.default_rng(6)
  for _ in range(8):
    leaves = _adversarial_leaves(rng, dtype)
    total = sum(x.size for x in leaves)
    bits = int(rng.choice([1, 2, 4, 5]))
    for k in sorted({0, 1, int(rng.integers(1, total + 1)), total - 1, total}):
      want = ref.top_k_flat(leaves, k)
      for name, masks in (
          ("radix_count", count(leaves, jnp.uint32(k), bits)),
          ("histogram", _traced(leaves, jnp.uint32(k)))):
        for mask, w in zip(masks, want):
          np.testing.assert_array_equal(
              np.asarray(mask), w, err_msg=f"{name} b={bits} k={k}/{total}")


def _lowered(platform):
  fn = jax.jit(lambda leaves, k: top_k_masks(leaves, k))
  leaves = [jnp.ones((64, 32)), jnp.ones(7)]
  return fn.trace(leaves, jnp.uint32(3)).lower(
      lowering_platforms=(platform,)).as_text()


def test_auto_is_histogram_on_cpu_and_scatter_free_elsewhere():
  # "auto" is resolved when lowering: the CPU program has the histogram's
  # scatter-adds, the GPU and TPU programs none.
  assert "scatter" in _lowered("cpu")
  for platform in ("cuda", "rocm", "tpu"):
    assert "scatter" not in _lowered(platform), platform
  explicit = jax.jit(lambda leaves, k: top_k_masks(
      leaves, k, selection="radix_count")).lower(
          [jnp.ones((64, 32))], jnp.uint32(3)).as_text()
  assert "scatter" not in explicit and "sort" not in explicit
  # None is "auto".
  leaves = [np.arange(12.0, dtype=np.float32).reshape(3, 4)]
  np.testing.assert_array_equal(top_k_masks(leaves, 5, selection=None)[0],
                                ref.top_k_flat(leaves, 5)[0])
