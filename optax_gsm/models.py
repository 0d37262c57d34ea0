"""Small Flax models used by the examples and benchmarks (the paper's nets)."""

from __future__ import annotations

from collections.abc import Sequence

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
