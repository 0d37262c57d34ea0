"""Flax models shared by the examples, benchmarks and tests (the paper's nets)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
  """A ReLU multilayer perceptron on flattened inputs.

  ``MLP((300, 100, 10))`` is the paper's LeNet-300-100.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> model = MLP((32, 10))
    >>> params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8)))
    >>> model.apply(params, jnp.zeros((4, 8, 8))).shape
    (4, 10)
  """
  features: Sequence[int]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.features):
      x = nn.Dense(width, kernel_init=nn.initializers.xavier_uniform())(x)
      if i < len(self.features) - 1:
        x = nn.relu(x)
    return x


def lenet_300_100(num_classes: int = 10) -> MLP:
  """LeNet-300-100: dense 784-300-100-10 with ReLU, as in the paper."""
  return MLP((300, 100, num_classes))


class LeNet5(nn.Module):
  """LeNet-5 as the paper's code defines it.

  conv 20 5x5, max-pool 2, conv 50 5x5, max-pool 2, dense 500, dense 10, with
  ReLU after each hidden layer and VALID convolutions (431K weights on 28x28
  inputs).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> params = LeNet5().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    >>> sum(x.size for x in jax.tree.leaves(params))
    431080
  """
  num_classes: int = 10
  widths: tuple[int, int, int] = (20, 50, 500)  # conv1, conv2, dense hidden

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim == 3:
      x = x[..., None]
    init = nn.initializers.xavier_uniform()
    conv1, conv2, hidden = self.widths
    x = nn.relu(nn.Conv(conv1, (5, 5), padding="VALID", kernel_init=init)(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(nn.Conv(conv2, (5, 5), padding="VALID", kernel_init=init)(x))
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(hidden, kernel_init=init)(x))
    return nn.Dense(self.num_classes, kernel_init=init)(x)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of argmax predictions equal to the labels."""
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def sparse_mlp_apply(model: MLP, params: Any, x: jax.Array
                     ) -> jax.Array:
  """Runs :class:`MLP` with BCOO kernels from ``optax_gsm.to_bcoo``.

  ``jax.experimental.sparse.sparsify`` does not trace through Flax's
  ``apply``, so this is the MLP's forward pass with each ``x @ kernel`` a
  dense-by-sparse product.

  Args:
    model: the MLP.
    params: its params, kernels as BCOO (dense ones work too).
    x: the inputs, flattened as the MLP does.

  Returns:
    The logits.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import optax_gsm
    >>> model = MLP((4, 2))
    >>> params = model.init(jax.random.key(0), jnp.ones((1, 3)))
    >>> params = jax.tree.map(lambda w: w * (jnp.abs(w) > 0.4), params)
    >>> x = jnp.ones((2, 3))
    >>> out = sparse_mlp_apply(model, optax_gsm.to_bcoo(params), x)
    >>> bool(jnp.allclose(out, model.apply(params, x), atol=1e-6))
    True
  """
  if not isinstance(model, MLP):
    raise TypeError(f"model must be examples.common.models.MLP, got "
                    f"{type(model).__name__}.")
  layers = params["params"] if set(params) == {"params"} else params
  x = x.reshape((x.shape[0], -1))
  for i in range(len(model.features)):
    layer = layers[f"Dense_{i}"]
    x = x @ layer["kernel"] + layer["bias"]
    if i < len(model.features) - 1:
      x = jax.nn.relu(x)
  return x
