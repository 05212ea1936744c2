"""Task metrics on hand-built logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.tasks import build_task


def _batch(b=2, t=6, v=10, seed=0):
  rng = np.random.default_rng(seed)
  targets = rng.integers(0, v, size=(b, t)).astype(np.int32)
  weights = (rng.random((b, t)) < 0.5).astype(np.float32)
  weights[0, 0] = 1.0
  return {"inputs": targets, "targets": targets, "weights": weights}


def test_perfect_logits(make_config):
  task = build_task(make_config("mqar", vocab_size=64, seq_len=32, num_kv_pairs=4))
  batch = _batch(v=10)
  logits = 100.0 * jax.nn.one_hot(batch["targets"], 10)
  m = jax.jit(task.metrics)(logits, batch)
  assert float(m["accuracy"]) == 1.0 and float(m["loss"]) < 1e-6
  loss, aux = jax.jit(task.loss_fn)(logits, batch)
  assert float(loss) == float(aux["loss"])


def test_weighted_values_against_numpy(make_config):
  task = build_task(make_config("copy", vocab_size=16, seq_len=32))
  batch = _batch(v=10, seed=1)
  logits = np.random.default_rng(2).normal(size=(2, 6, 10)).astype(np.float32)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce = -np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
  w = batch["weights"]
  correct = logits.argmax(-1) == batch["targets"]
  m = task.metrics(jnp.asarray(logits), batch)
  np.testing.assert_allclose(float(m["loss"]), (ce * w).sum() / w.sum(), rtol=1e-5)
  np.testing.assert_allclose(float(m["accuracy"]), (correct * w).sum() / w.sum(), rtol=1e-6)
  uniform = task.metrics(jnp.zeros((2, 6, 10)), batch)
  np.testing.assert_allclose(float(uniform["loss"]), np.log(10), rtol=1e-6)
  grads = jax.grad(lambda l: task.loss_fn(l, batch)[0])(jnp.asarray(logits))
  assert np.all(np.asarray(grads)[w == 0] == 0)  # unweighted positions get no gradient


@pytest.mark.parametrize("vocab,key", [("byte", "bits_per_byte"), ("char", "bits_per_char")])
def test_char_lm_bits(tmp_path, vocab, key, make_config):
  path = tmp_path / "t.txt"
  path.write_text("abc" * 10)
  task = build_task(make_config("char_lm", path=str(path), vocab=vocab, seq_len=4,
                                batch_size=1, val_fraction=0.5))
  batch = _batch(v=3)
  m = task.metrics(jnp.zeros((2, 6, 3)), batch)
  np.testing.assert_allclose(float(m[key]), np.log2(3), rtol=1e-6)
  assert set(m) == {"loss", "accuracy", key}
