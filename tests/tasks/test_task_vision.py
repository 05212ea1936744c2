"""vision task: spec, exact eval coverage, label smoothing, and smoke training of mha / neighborhood on digits."""

import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.config_loading import load_config
from attnlab.tasks import build_task
from attnlab.train import trainer


def test_spec_eval_coverage_and_metrics(make_config):
  task = build_task(make_config("vision", batch_size=64))
  task.validate()
  assert task.model == "vit" and task.model_kwargs() == {"num_classes": 10, "image_shape": (8, 8, 1)}
  assert task.input_spec()["inputs"].shape == (64, 8, 8, 1)
  batches = task.eval_batches(shard_index=0, shard_count=1)
  w = np.concatenate([b["weights"] for b in batches])
  assert len(batches) == 6 and w.sum() == 359 and np.all(w[359:] == 0)
  it = task.train_iterator(shard_index=0, shard_count=1)
  first = next(it)
  assert first["inputs"].shape == (64, 8, 8, 1) and first["inputs"].dtype == np.float32
  logits = jnp.zeros((4, 10)).at[:, 3].set(5.0)
  batch = {"targets": jnp.array([3, 3, 1, 0]), "weights": jnp.array([1.0, 1.0, 1.0, 0.0])}
  m = task.metrics(logits, batch)
  assert float(m["accuracy"][0]) == 2.0 and float(m["accuracy"][1]) == 3.0
  smooth = build_task(make_config("vision", label_smoothing=0.1)).metrics(logits, batch)
  assert float(smooth["loss"][0]) > float(m["loss"][0])
  np.testing.assert_allclose(smooth["cross_entropy"][0], m["cross_entropy"][0])


def test_val_split_holds_out_of_train(make_config):
  task = build_task(make_config("vision", split="val"))
  task.validate()
  assert len(task.source("train")) + len(task.source("val")) == 1438


def test_bad_dataset_is_one_line_error(make_config):
  with pytest.raises(ValueError, match="dataset must be one of"):
    build_task(make_config("vision", dataset="imagenet")).validate()


@pytest.mark.parametrize("variant", ["mha", "neighborhood"])
def test_smoke_train_on_digits(tmp_path, variant):
  config = load_config(f"configs/vision.py:smoke=True,variant={variant}", [])
  result = trainer.train(config, str(tmp_path))
  assert result["step"] == config.train.steps and result["eval/examples"] == 359
  assert np.isfinite(result["eval/loss"]) and 0.0 <= result["eval/accuracy"] <= 1.0
