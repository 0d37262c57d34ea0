"""Tests of the sparse export: BCOO, values+indices files, sparse inference."""

import io
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_gsm
from examples.common import models

MODEL = models.MLP((64, 32, 10))


@pytest.fixture(scope="module")
def pruned():
  params = jax.jit(MODEL.init)(jax.random.key(0), jnp.zeros((1, 100)))
  return jax.jit(lambda p: optax_gsm.prune(p, compression=10)[0])(params)


def test_bcoo_matches_dense_and_sparse_apply_matches_model(pruned):
  tree = optax_gsm.to_bcoo(pruned)
  for dense, sp in zip(jax.tree.leaves(pruned),
                       jax.tree.leaves(tree, is_leaf=lambda x: hasattr(
                           x, "todense"))):
    if hasattr(sp, "todense"):
      np.testing.assert_array_equal(sp.todense(), dense)
      assert sp.nse == np.count_nonzero(dense)
  x = jax.random.normal(jax.random.key(1), (3, 100))
  np.testing.assert_allclose(
      jax.jit(lambda p, x: models.sparse_mlp_apply(MODEL, p, x))(tree, x),
      MODEL.apply(pruned, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("compress", [False, True])
def test_file_round_trip_is_exact_and_smaller(pruned, tmp_path, compress):
  path = tmp_path / "model.npz"
  nbytes = optax_gsm.save_sparse(path, pruned, compress=compress)
  assert nbytes == path.stat().st_size
  dense = io.BytesIO()
  np.savez(dense, *[np.asarray(x) for x in jax.tree.leaves(pruned)])
  assert nbytes < len(dense.getvalue()) / 2  # 10% density, small indices
  loaded = optax_gsm.load_sparse(path)
  same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)),
                            loaded, pruned)
  assert all(jax.tree.leaves(same))
  assert jax.tree.structure(loaded) == jax.tree.structure(pruned)


def test_index_dtype_is_small(pruned):
  arrays = optax_gsm.export.sparse_arrays(pruned)
  assert arrays["params/Dense_0/kernel::indices"].dtype == np.uint16
  assert arrays["params/Dense_2/kernel::indices"].dtype == np.uint16
  assert "params/Dense_0/bias::dense" in arrays


def test_no_zeros_is_an_error():
  params = {"w": jnp.ones((3, 3)), "b": jnp.zeros(3)}
  for fn in (optax_gsm.to_bcoo, optax_gsm.export.sparse_arrays,
             lambda p: optax_gsm.save_sparse(io.BytesIO(), p)):
    with pytest.raises(ValueError, match="no pooled leaf of params holds a "
                       "zero"):
      fn(params)


def test_sparse_apply_needs_an_mlp():
  with pytest.raises(TypeError, match="MLP"):
    models.sparse_mlp_apply(models.LeNet5(), {}, jnp.ones((1, 4)))


def test_bfloat16_round_trip_and_reserved_names(tmp_path):
  params = {"k": jnp.array([[0.0, 1.5], [0.0, -2.0]], jnp.bfloat16),
            "b": jnp.array([1.0, 2.0], jnp.bfloat16)}
  path = tmp_path / "bf16.npz"
  optax_gsm.save_sparse(path, params)
  loaded = optax_gsm.load_sparse(path)
  for name in params:
    assert loaded[name].dtype == jnp.bfloat16
    np.testing.assert_array_equal(loaded[name], params[name])
  with pytest.raises(ValueError, match="reserves"):
    optax_gsm.save_sparse(tmp_path / "x.npz", {"a/b": jnp.array([[0.0, 1.0]])})


@pytest.mark.parametrize("tree", [
    {"layers": [{"k": jnp.eye(3)}, {"k": jnp.eye(3)}]},
    {"pair": (jnp.eye(2), jnp.ones(2)), "ints": {0: jnp.eye(2), 3: {}},
     "empty": {}, "none": None, "list": []},
    jnp.eye(3),
    [jnp.eye(2), (jnp.ones(3), {"x": jnp.eye(2)})],
])
def test_save_sparse_round_trips_the_structure(tree):
  buf = io.BytesIO()
  optax_gsm.save_sparse(buf, tree)
  buf.seek(0)
  loaded = optax_gsm.load_sparse(buf)
  assert (jax.tree.structure(loaded, is_leaf=lambda x: x is None)
          == jax.tree.structure(tree, is_leaf=lambda x: x is None))
  jax.tree.map(np.testing.assert_array_equal, loaded, tree)


def test_save_sparse_rejects_other_containers():
  class Pair(NamedTuple):
    a: Any
    b: Any
  with pytest.raises(TypeError, match="got a Pair node"):
    optax_gsm.save_sparse(io.BytesIO(), {"p": Pair(jnp.eye(2), jnp.eye(2))})


def test_load_sparse_names_a_file_it_cannot_read(tmp_path):
  good = io.BytesIO()
  optax_gsm.save_sparse(good, {"w": jnp.eye(3)})
  npy = tmp_path / "array.npy"
  np.save(npy, np.eye(3))
  other = tmp_path / "other.npz"
  np.savez(other, a=np.ones(2), **{"a::shape": np.ones(2)})
  junk = tmp_path / "junk.bin"
  junk.write_bytes(b"not a zip file at all" * 10)
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(good.getvalue()[:-40])
  for path in (npy, other, junk, truncated):
    with pytest.raises(ValueError, match=f"{path} is not a save_sparse file"):
      optax_gsm.load_sparse(path)
  with pytest.raises(FileNotFoundError):
    optax_gsm.load_sparse(tmp_path / "missing.npz")
