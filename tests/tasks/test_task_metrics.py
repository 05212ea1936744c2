"""Task metrics on hand-built logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.tasks import build_task
from attnlab.tasks import metrics as metrics_lib


def _values(pairs):
  return {k: float(metrics_lib.ratio(p)) for k, p in pairs.items()}


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
  m = _values(jax.jit(task.metrics)(logits, batch))
  assert float(m["accuracy"]) == 1.0 and float(m["loss"]) < 1e-6
  loss, aux = jax.jit(task.loss_fn)(logits, batch)
  assert float(loss) == _values(aux)["loss"]


def test_weighted_values_against_numpy(make_config):
  task = build_task(make_config("copy", vocab_size=16, seq_len=32))
  batch = _batch(v=10, seed=1)
  logits = np.random.default_rng(2).normal(size=(2, 6, 10)).astype(np.float32)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce = -np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
  w = batch["weights"]
  correct = logits.argmax(-1) == batch["targets"]
  m = _values(task.metrics(jnp.asarray(logits), batch))
  np.testing.assert_allclose(float(m["loss"]), (ce * w).sum() / w.sum(), rtol=1e-5)
  np.testing.assert_allclose(float(m["accuracy"]), (correct * w).sum() / w.sum(), rtol=1e-6)
  uniform = _values(task.metrics(jnp.zeros((2, 6, 10)), batch))
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
  m = _values(task.metrics(jnp.zeros((2, 6, 3)), batch))
  np.testing.assert_allclose(float(m[key]), np.log2(3), rtol=1e-6)
  assert set(m) == {"loss", "accuracy", key}


def test_pairs_make_eval_exact_whatever_the_batching():
  """Summing (sum, count) pairs over batches equals the metric over all examples at once;
  a mean of per-batch means does not (batches with different weight totals)."""
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(6, 5, 7)).astype(np.float32)
  targets = rng.integers(0, 7, (6, 5)).astype(np.int32)
  weights = np.zeros((6, 5), np.float32)
  weights[0, :5] = 1
  weights[1:, 0] = 1
  whole = metrics_lib.token_metrics(jnp.asarray(logits), {"targets": targets, "weights": weights})
  parts = [metrics_lib.token_metrics(jnp.asarray(logits[i:i + 2]),
                                     {"targets": targets[i:i + 2], "weights": weights[i:i + 2]})
           for i in (0, 2, 4)]
  summed = sum(float(p["loss"][0]) for p in parts) / sum(float(p["loss"][1]) for p in parts)
  np.testing.assert_allclose(summed, float(metrics_lib.ratio(whole["loss"])), rtol=1e-6)
  mean_of_means = np.mean([float(metrics_lib.ratio(p["loss"])) for p in parts])
  assert abs(mean_of_means - summed) > 1e-3


def test_classification_and_regression_pairs_ignore_padding_rows():
  logits = jnp.asarray([[5.0, 0.0], [0.0, 5.0], [9.0, 0.0]])
  batch = {"targets": jnp.asarray([0, 0, 1]), "weights": jnp.asarray([1.0, 1.0, 0.0])}
  m = _values(metrics_lib.classification_metrics(logits, batch))
  assert m["accuracy"] == 0.5
  pred = jnp.asarray([[[1.0], [3.0]], [[0.0], [0.0]]])
  batch = {"targets": jnp.zeros((2, 2, 1)), "weights": jnp.asarray([1.0, 0.0])}
  m = _values(metrics_lib.regression_metrics(pred, batch))
  np.testing.assert_allclose([m["mse"], m["mae"], m["loss"]], [5.0, 2.0, 5.0])


def test_example_count_skips_padding_rows(make_config):
  task = build_task(make_config("copy", vocab_size=16, seq_len=32))
  batch = _batch(b=3, seed=4)
  batch["weights"][2] = 0
  assert float(task.example_count(batch)) == 2.0
