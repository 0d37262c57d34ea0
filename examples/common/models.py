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


# Flax NNX nets for the deep-network benchmark (benchmarks/deep.py).

from flax import nnx  # noqa: E402  (the Linen nets above need only linen)


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions with batch norm and an identity shortcut.

  When the block changes the width or the stride, the shortcut is a 1x1
  convolution with batch norm (He et al., 2016, option B).
  """

  def __init__(self, in_features: int, features: int, stride: int,
               *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(in_features, features, (3, 3), strides=stride,
                          padding="SAME", use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(features, momentum=0.9, rngs=rngs)
    self.conv2 = nnx.Conv(features, features, (3, 3), padding="SAME",
                          use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(features, momentum=0.9, rngs=rngs)
    if stride != 1 or in_features != features:
      self.proj = nnx.Conv(in_features, features, (1, 1), strides=stride,
                           use_bias=False, rngs=rngs)
      self.proj_bn = nnx.BatchNorm(features, momentum=0.9, rngs=rngs)
    else:
      self.proj = self.proj_bn = None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    shortcut = x if self.proj is None else self.proj_bn(self.proj(x))
    return nnx.relu(y + shortcut)


class ResNet(nnx.Module):
  """A CIFAR-style ResNet of depth 6n+2 (ResNet-20: n=3, ResNet-56: n=9).

  A 3x3 convolution on 28x28x1 (or 32x32x3) images, three stages of ``n``
  basic blocks at ``widths`` channels (the second and third halve the
  resolution), global average pooling and a dense classifier; batch norm
  after every convolution, no convolution bias.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = ResNet(depth=20, widths=(4, 8, 16), rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)
    >>> convs = [p for p, _ in nnx.iter_graph(model) if p and p[-1] == "kernel"]
    >>> len(convs)  # 19 convolutions + the classifier = 20 layers, + 2 shortcuts
    22
  """

  def __init__(self, depth: int = 20, widths: Sequence[int] = (16, 32, 64),
               num_classes: int = 10, in_features: int = 1,
               *, rngs: nnx.Rngs):
    if depth < 8 or (depth - 2) % 6:
      raise ValueError(f"depth must be 6n+2 with n >= 1, got {depth}.")
    n = (depth - 2) // 6
    self.conv = nnx.Conv(in_features, widths[0], (3, 3), padding="SAME",
                         use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(widths[0], momentum=0.9, rngs=rngs)
    blocks, cin = [], widths[0]
    for stage, width in enumerate(widths):
      for i in range(n):
        stride = 2 if stage > 0 and i == 0 else 1
        blocks.append(BasicBlock(cin, width, stride, rngs=rngs))
        cin = width
    self.blocks = nnx.List(blocks)
    self.head = nnx.Linear(cin, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim == 3:
      x = x[..., None]
    x = nnx.relu(self.bn(self.conv(x)))
    for block in self.blocks:
      x = block(x)
    return self.head(jnp.mean(x, axis=(1, 2)))


class EncoderBlock(nnx.Module):
  """A pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

  def __init__(self, width: int, heads: int, mlp_width: int,
               *, rngs: nnx.Rngs):
    self.ln1 = nnx.LayerNorm(width, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=width,
                                       decode=False, rngs=rngs)
    self.ln2 = nnx.LayerNorm(width, rngs=rngs)
    self.mlp_in = nnx.Linear(width, mlp_width, rngs=rngs)
    self.mlp_out = nnx.Linear(mlp_width, width, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.ln1(x))
    return x + self.mlp_out(nnx.gelu(self.mlp_in(self.ln2(x))))


class ViT(nnx.Module):
  """A small vision transformer for 28x28x1 images.

  Non-overlapping ``patch`` x ``patch`` patches embedded by a strided
  convolution, a learned positional table (``pos``), ``depth`` pre-norm
  blocks of ``nnx.MultiHeadAttention`` and a GELU MLP, a final LayerNorm,
  mean pooling over tokens and a dense classifier (no class token).

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> model = ViT(patch=7, width=16, depth=2, heads=2, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros((3, 28, 28, 1))).shape
    (3, 10)
    >>> model.pos.shape  # (28 / 7)**2 tokens
    (16, 16)
  """

  def __init__(self, patch: int = 7, width: int = 128, depth: int = 6,
               heads: int = 4, mlp_width: int | None = None,
               num_classes: int = 10, image_size: int = 28,
               in_features: int = 1, *, rngs: nnx.Rngs):
    if image_size % patch:
      raise ValueError(f"patch ({patch}) must divide image_size "
                       f"({image_size}).")
    tokens = (image_size // patch) ** 2
    self.embed = nnx.Conv(in_features, width, (patch, patch),
                          strides=patch, padding="VALID", rngs=rngs)
    self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(),
                                                  (tokens, width)))
    self.blocks = nnx.List([
        EncoderBlock(width, heads, mlp_width or 2 * width, rngs=rngs)
        for _ in range(depth)])
    self.ln = nnx.LayerNorm(width, rngs=rngs)
    self.head = nnx.Linear(width, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim == 3:
      x = x[..., None]
    x = self.embed(x)
    x = x.reshape((x.shape[0], -1, x.shape[-1])) + self.pos[...]
    for block in self.blocks:
      x = block(x)
    return self.head(jnp.mean(self.ln(x), axis=1))
