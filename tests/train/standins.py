"""A tiny task and model that follow the task/model contracts, for trainer tests.

They keep the trainer's tests independent of the real tasks and models (which have
their own tests) and small enough for seconds on CPU. The model uses every logical
axis name the real models use, so the sharding tests exercise the default rules.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def standin_config(**train_overrides: Any) -> ml_collections.ConfigDict:
  """Returns a full config (seed, model, task, train, mesh) for the stand-ins: ~1 s of training."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(dict(d_model=16, num_heads=2, head_dim=8, mlp_dim=32,
                                           dropout=0.1))
  c.task = ml_collections.ConfigDict(dict(name="standin", vocab_size=16, seq_len=8,
                                          poison_step=0))
  c.train = ml_collections.ConfigDict(dict(
      steps=8, batch_size=8, learning_rate=1e-2, warmup_steps=2, weight_decay=0.01, grad_clip=1.0,
      eval_every=4, eval_batches=2, checkpoint_every=4, keep_checkpoints=2, log_every=2))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.train.update(train_overrides)
  return c


def _example(seed: int, index: int, vocab: int, seq_len: int) -> dict[str, np.ndarray]:
  """A counting sequence (start + t) mod V with random start; next-token targets."""
  rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
  seq = (rng.integers(vocab) + rng.integers(1, 3) * np.arange(seq_len + 1)) % vocab
  return {"inputs": seq[:-1].astype(np.int32), "targets": seq[1:].astype(np.int32),
          "weights": np.ones(seq_len, np.float32)}


class StandinTask:
  """Contract-following task: counting sequences, weighted cross-entropy metrics.

  `config.task.poison_step` = k > 0 makes the k-th training batch's weights NaN
  (so the loss of train step k is non-finite).
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.vocab_size = int(config.task.vocab_size)
    self.seq_len = int(config.task.seq_len)
    self.batch_size = int(config.train.batch_size)
    self.poison_step = int(config.task.get("poison_step", 0))

  def validate(self) -> None:
    """Raises a one-line ValueError on a bad config."""
    if self.vocab_size < 2:
      raise ValueError(f"standin: vocab_size must be >= 2, got {self.vocab_size}")

  def _batches(self, seed: int) -> grain.MapDataset:
    vocab, seq_len, poison = self.vocab_size, self.seq_len, self.poison_step
    rows = self.batch_size // jax.process_count()
    first = jax.process_index() * rows  # this process's block of rows of each global batch

    def make(i):
      batch = [_example(seed, int(i) * self.batch_size + first + r, vocab, seq_len)
               for r in range(rows)]
      out = {k: np.stack([b[k] for b in batch]) for k in batch[0]}
      if poison and int(i) == poison - 1:
        out["weights"] = np.full_like(out["weights"], np.nan)
      return out
    return grain.MapDataset.range(1 << 30).map(make)

  model = "standin"

  def input_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    """inputs / targets int32 [B, T], weights float32 [B, T]."""
    b, t = self.batch_size, self.seq_len
    return {"inputs": jax.ShapeDtypeStruct((b, t), jnp.int32),
            "targets": jax.ShapeDtypeStruct((b, t), jnp.int32),
            "weights": jax.ShapeDtypeStruct((b, t), jnp.float32)}

  def model_kwargs(self) -> dict[str, Any]:
    """{"vocab_size": V}."""
    return {"vocab_size": self.vocab_size}

  def example_count(self, batch) -> jax.Array:
    """Every row counts."""
    return jnp.asarray(jax.tree.leaves(batch)[0].shape[0], jnp.float32)

  def train_iterator(self) -> grain.DatasetIterator:
    """Infinite checkpointable iterator of {inputs, targets int32 [B, T], weights f32 [B, T]}."""
    return iter(self._batches(int(self.config.seed)).to_iter_dataset())

  def eval_batches(self) -> list[dict[str, np.ndarray]]:
    """`config.train.eval_batches` fixed batches from a disjoint stream."""
    ds = self._batches(int(self.config.seed) + 1000)
    return [ds[i] for i in range(int(self.config.train.eval_batches))]

  def metrics(self, logits: jax.Array, batch: dict[str, jax.Array]) -> dict[str, tuple]:
    """(sum, count) pairs of the weighted cross-entropy `loss` and `accuracy` over [B, T]."""
    w = batch["weights"]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    nll = -jnp.take_along_axis(logp, batch["targets"][..., None], axis=-1)[..., 0]
    correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
    return {"loss": (jnp.sum(nll * w), jnp.sum(w)), "accuracy": (jnp.sum(correct * w), jnp.sum(w))}


def _param(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple[str, ...],
           in_axis=0, out_axis=-1) -> jax.Array:
  init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=in_axis, out_axis=out_axis)
  return module.param(name, nn.with_logical_partitioning(init, axes), shape)


class StandinLM(nn.Module):
  """One pre-norm causal attention + MLP block: tokens [B, T] -> logits [B, T, V].

  Like routing attention's k-means centroids, it keeps a non-param collection
  ("stats": an EMA of the embeddings' mean, moved only when deterministic=False)
  that feeds the forward pass, so it must be trained, checkpointed and restored.
  """
  vocab_size: int
  d_model: int = 16
  num_heads: int = 2
  head_dim: int = 8
  mlp_dim: int = 32
  dropout: float = 0.0

  @nn.compact
  def __call__(self, tokens: jax.Array, deterministic: bool = True) -> jax.Array:
    """Returns float32 logits [B, T, vocab_size]."""
    d, h, k = self.d_model, self.num_heads, self.head_dim
    emb = _param(self, "embed", (self.vocab_size, d), ("vocab", "embed"))
    x = nn.with_logical_constraint(emb[tokens], ("batch", "length", "embed"))
    ema = self.variable("stats", "ema", jnp.zeros, (d,))
    if not deterministic and not self.is_initializing():
      ema.value = 0.9 * ema.value + 0.1 * jnp.mean(x, axis=(0, 1))
    x = x + jnp.tanh(ema.value)
    y = nn.LayerNorm(use_bias=False)(x)
    q = jnp.einsum("btd,dhk->bthk", y, _param(self, "q", (d, h, k), ("embed", "heads", "head_dim"), out_axis=(1, 2)))
    kk = jnp.einsum("btd,dhk->bthk", y, _param(self, "k", (d, h, k), ("embed", "heads", "head_dim"), out_axis=(1, 2)))
    v = jnp.einsum("btd,dhk->bthk", y, _param(self, "v", (d, h, k), ("embed", "heads", "head_dim"), out_axis=(1, 2)))
    t = tokens.shape[1]
    s = jnp.einsum("bqhk,bshk->bhqs", q, kk) * k ** -0.5
    s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -1e30)
    a = jnp.einsum("bhqs,bshk->bqhk", jax.nn.softmax(s, -1), v)
    o = _param(self, "o", (h, k, d), ("heads", "head_dim", "embed"), in_axis=(0, 1), out_axis=2)
    x = x + nn.Dropout(self.dropout)(jnp.einsum("bqhk,hkd->bqd", a, o), deterministic=deterministic)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    y = nn.LayerNorm(use_bias=False)(x)
    up = _param(self, "up", (d, self.mlp_dim), ("embed", "mlp"))
    down = _param(self, "down", (self.mlp_dim, d), ("mlp", "embed"))
    x = x + jax.nn.gelu(y @ up) @ down
    unembed = _param(self, "unembed", (d, self.vocab_size), ("embed", "vocab"))
    return (nn.LayerNorm(use_bias=False)(x) @ unembed).astype(jnp.float32)


def build_standins(config: ml_collections.ConfigDict) -> tuple[StandinTask, StandinLM]:
  """Returns (task, model) for `config` (from `standin_config`)."""
  task = StandinTask(config)
  m = config.model
  model = StandinLM(vocab_size=task.vocab_size, d_model=m.d_model, num_heads=m.num_heads,
                    head_dim=m.head_dim, mlp_dim=m.mlp_dim, dropout=m.dropout)
  return task, model


class RegressionTask:
  """Contract-following regression stand-in: float inputs [B, T, F], float targets [B, F]
  (a fixed linear function of the inputs' mean over time plus noise), MSE loss.

  The eval set has `eval_examples` examples, not a multiple of the batch: the last batch
  is padded with weight-0 rows, so `eval/examples` must come out as `eval_examples`.
  """

  model = "regressor"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.seq_len, self.features = int(config.task.seq_len), int(config.task.features)
    self.batch_size = int(config.train.batch_size)
    self.eval_examples = int(config.task.get("eval_examples", 13))
    self.w = np.random.default_rng(7).normal(size=(self.features, self.features)).astype(np.float32)

  def validate(self) -> None:
    """Nothing to check."""

  def input_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    """inputs float32 [B, T, F], targets float32 [B, F], weights float32 [B]."""
    b, t, f = self.batch_size, self.seq_len, self.features
    return {"inputs": jax.ShapeDtypeStruct((b, t, f), jnp.float32),
            "targets": jax.ShapeDtypeStruct((b, f), jnp.float32),
            "weights": jax.ShapeDtypeStruct((b,), jnp.float32)}

  def model_kwargs(self) -> dict[str, Any]:
    """{"features": F}."""
    return {"features": self.features}

  def _example(self, seed: int, index: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    x = rng.normal(size=(self.seq_len, self.features)).astype(np.float32)
    y = x.mean(0) @ self.w + 0.01 * rng.normal(size=self.features).astype(np.float32)
    return {"inputs": x, "targets": y.astype(np.float32), "weights": np.float32(1.0)}

  def _batch(self, seed: int, indices) -> dict[str, np.ndarray]:
    rows = [self._example(seed, i) if i is not None else
            dict(self._example(seed, 0), weights=np.float32(0.0)) for i in indices]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

  def train_iterator(self) -> grain.DatasetIterator:
    """Infinite checkpointable iterator of fresh examples."""
    b, seed = self.batch_size, int(self.config.seed)
    ds = grain.MapDataset.range(1 << 30).map(lambda i: self._batch(seed, range(i * b, (i + 1) * b)))
    return iter(ds.to_iter_dataset())

  def eval_batches(self) -> list[dict[str, np.ndarray]]:
    """Every eval example once; the last batch padded with weight-0 rows."""
    b, n = self.batch_size, self.eval_examples
    idx = list(range(n)) + [None] * (-n % b)
    return [self._batch(int(self.config.seed) + 1000, idx[i:i + b]) for i in range(0, len(idx), b)]

  def metrics(self, pred: jax.Array, batch: dict[str, jax.Array]) -> dict[str, tuple]:
    """(sum, count) pairs of the weighted mean squared error."""
    w = batch["weights"][:, None]
    se = jnp.sum(w * (pred - batch["targets"]) ** 2)
    return {"loss": (se, jnp.sum(w) * pred.shape[-1])}

  def example_count(self, batch) -> jax.Array:
    """Rows with weight > 0."""
    return jnp.sum(batch["weights"] > 0).astype(jnp.float32)


class Regressor(nn.Module):
  """float inputs [B, T, F] -> [B, F]: a two-layer MLP on the mean over time."""
  features: int
  hidden: int = 32

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    h = jax.nn.gelu(nn.Dense(self.hidden)(jnp.mean(x, axis=1)))
    return nn.Dense(self.features)(h)


def regression_config(**train_overrides: Any) -> ml_collections.ConfigDict:
  """A config for `RegressionTask` (float inputs, MSE)."""
  c = standin_config(**train_overrides)
  c.task = ml_collections.ConfigDict(dict(name="regression", seq_len=6, features=3, eval_examples=13))
  c.train.update(dict(steps=40, learning_rate=3e-2, eval_every=20, checkpoint_every=20))
  c.train.update(train_overrides)
  return c
