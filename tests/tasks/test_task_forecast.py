"""The `forecast` task: batches as its input_spec, eval over every window exactly once,
exact MSE / MAE, bad inputs, and the early-stopping protocol end to end (smoke)."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.config_loading import load_config
from attnlab.registry import UnknownNameError
from attnlab.tasks import build_task

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "forecast.py")


def smoke(arg="", **task):
  c = load_config(f"{CONFIG}:smoke=True" + (f",{arg}" if arg else ""), [])
  for k, v in task.items():
    c.task[k] = v
  return c


def test_batches_match_input_spec_and_cover_every_window():
  task = build_task(smoke(features="MS"))
  task.validate()
  spec = task.input_spec()
  d = task.data
  assert spec["inputs"]["series"].shape == (8, 48, 4) and spec["targets"].shape == (8, 24, 1)
  assert task.model_kwargs() == {"num_features": 4, "horizon": 24, "num_targets": 1}
  train = next(iter(task.epoch_batches(0)))
  assert train["inputs"]["marks"].shape == spec["inputs"]["marks"].shape
  batches = task.eval_batches()
  n = d.num_windows("test")
  assert len(batches) == -(-n // 8)
  w = np.concatenate([b["weights"] for b in batches])
  assert w.sum() == n and np.all(w[:n] == 1) and np.all(w[n:] == 0)
  # the j-th real row is test window j
  np.testing.assert_array_equal(batches[1]["targets"][2], d.window("test", 10)["targets"])


def test_epoch_is_a_permutation():
  task = build_task(smoke())
  seen = np.concatenate([b["inputs"]["series"][:, 0, 0] for b in task.epoch_batches(3)])
  firsts = task.data.values["train"][:task.data.num_windows("train"), 0]
  assert len(seen) == task.steps_per_epoch() * 8
  # every drawn window is distinct (windows start at distinct rows of a continuous series)
  assert len(np.unique(seen)) == len(seen) and np.isin(seen, firsts).all()
  again = np.concatenate([b["inputs"]["series"][:, 0, 0] for b in task.epoch_batches(3)])
  np.testing.assert_array_equal(seen, again)


def test_metrics_are_exact_over_all_windows():
  """Zero forecasts: Σ sum / Σ count over the padded batches = the mean of target² (MSE) and
  |target| (MAE) over every element of every test window, padding excluded."""
  task = build_task(smoke())
  totals = np.zeros(3)
  for b in task.eval_batches():
    m = task.metrics(jnp.zeros_like(b["targets"]), b)
    totals += [float(m["mse"][0]), float(m["mae"][0]), float(m["mse"][1])]
  t = task.data.windows("test", np.arange(task.data.num_windows("test")))["targets"]
  assert totals[2] == t.size
  np.testing.assert_allclose(totals[0] / totals[2], np.mean(t ** 2), rtol=1e-5)
  np.testing.assert_allclose(totals[1] / totals[2], np.mean(np.abs(t)), rtol=1e-5)


@pytest.mark.parametrize("task_overrides, error, message", [
    ({"data": "/nonexistent/ETTh1.csv"}, FileNotFoundError, "does not exist"),
    ({"model": "nosuchmodel"}, UnknownNameError, "nosuchmodel"),
    ({"model": "lm"}, ValueError, "model must be one of vanilla"),
    ({"horizon": 200}, ValueError, "too long"),
    ({"split": "train"}, ValueError, "split must be one of"),
])
def test_bad_input(task_overrides, error, message):
  task = build_task(smoke(**task_overrides))
  with pytest.raises(error, match=message):
    task.validate()


def test_early_stopping_protocol_end_to_end(tmp_path):
  from attnlab.train import early_stopping, metrics as mt
  config = smoke("model=itransformer,variant=linear")
  config.train.epochs, config.train.patience = 3, 3
  result = early_stopping.train(config, str(tmp_path))
  task = build_task(config)
  assert result["test/examples"] == task.data.num_windows("test")
  assert result["val/examples"] == task.data.num_windows("val")
  records = [r for r in mt.read_metrics(str(tmp_path)) if "val/mse" in r]
  assert len(records) == result["epochs"] == 3
  best = min(records, key=lambda r: r["val/mse"])
  assert result["val/mse"] == best["val/mse"] and result["step"] == best["step"]
  assert [r["train/learning_rate"] for r in records] == pytest.approx([1e-3, 1e-3, 5e-4])
  assert os.path.getsize(tmp_path / "forecast.png") > 1000
  with open(tmp_path / "results.json") as f:
    assert json.load(f)["test/mse"] == result["test/mse"]
  assert early_stopping.train(config, str(tmp_path)) == result  # a finished workdir is reported


def test_early_stopping_resumes_a_killed_run_exactly(tmp_path, monkeypatch):
  """A run killed during epoch 2 restarts after epoch 1 (progress.json + last checkpoint) and
  ends with the uninterrupted run's results. It bites: a restart from scratch would log epoch 1
  twice (epochs [1, 1, 2]) and print no "resuming" line."""
  from attnlab.train import early_stopping, metrics as mt
  config = smoke("model=itransformer,variant=linear")
  config.train.epochs, config.train.patience = 2, 3
  whole = early_stopping.train(config, str(tmp_path / "whole"))

  original, calls = mt.MetricsWriter.write, []

  def dies_in_epoch_2(self, step, record):
    calls.append(step)
    if len(calls) == 2:
      raise KeyboardInterrupt("killed")
    return original(self, step, record)

  monkeypatch.setattr(mt.MetricsWriter, "write", dies_in_epoch_2)
  with pytest.raises(KeyboardInterrupt):
    early_stopping.train(config, str(tmp_path / "killed"))
  monkeypatch.setattr(mt.MetricsWriter, "write", original)
  with open(tmp_path / "killed" / "progress.json") as f:
    assert json.load(f)["epoch"] == 1
  logs = []
  monkeypatch.setattr(mt, "log", logs.append)
  resumed = early_stopping.train(config, str(tmp_path / "killed"))
  assert any("resuming after epoch 1" in line for line in logs)
  for key in ("test/mse", "test/mae", "val/mse", "step", "best_epoch", "epochs"):
    assert resumed[key] == whole[key], key
  epochs = [r["epoch"] for r in mt.read_metrics(str(tmp_path / "killed")) if "epoch" in r]
  assert epochs == [1, 2], "each epoch logged once"


@pytest.mark.parametrize("model,horizon,shape", [
    ("patchtst", 96, (1, 256, 1024, 2)), ("patchtst", 336, (1, 256, 1024, 8)),
    ("patchtst", 720, (1, 256, 1024, 16)), ("timexer", 96, (1, 256, 2048, 8)),
    ("timexer", 192, (2, 128, 2048, 8)), ("timexer", 720, (1, 256, 1024, 8)),
    ("itransformer", 96, (2, 256, 256, 8)), ("itransformer", 336, (2, 512, 512, 8))])
def test_config_shapes_per_model_and_horizon(model, horizon, shape):
  """(layers, d_model, d_ff, heads) from MODEL_SHAPES / HORIZON_SHAPES (the config's docstring)."""
  m = load_config(f"{CONFIG}:model={model},horizon={horizon}", []).model
  assert (m.num_layers, m.d_model, m.mlp_dim, m.num_heads) == shape
