"""In-process trainer tests on the stand-in task/model: outputs, evaluate, non-finite loss."""

import glob
import json
import os
import struct

import pytest

from attnlab.train import evaluate, train
from attnlab.train.metrics import read_metrics
from tests.train.standins import build_standins, standin_config

TRAIN_KEYS = {"train/loss", "train/accuracy", "train/learning_rate", "train/grad_norm",
              "train/steps_per_sec"}
EVAL_KEYS = {"eval/loss", "eval/accuracy", "eval/examples"}


def _train(workdir, **overrides):
  config = standin_config(**overrides.pop("train", {}))
  config.task.update(overrides.pop("task", {}))
  task, model = build_standins(config)
  return config, train(config, str(workdir), task=task, model=model)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One finished 8-step stand-in run, shared by the read-only tests below."""
  workdir = tmp_path_factory.mktemp("run")
  config, result = _train(workdir)
  return workdir, config, result


def test_outputs_exist_with_expected_keys(trained):
  workdir, config, result = trained
  records = read_metrics(str(workdir))
  train_records = [r for r in records if "train/loss" in r]
  eval_records = [r for r in records if "eval/loss" in r]
  assert [r["step"] for r in train_records] == [2, 4, 6, 8]  # log_every=2
  assert [r["step"] for r in eval_records] == [4, 8]  # eval_every=4
  assert all(set(r) == TRAIN_KEYS | {"step"} for r in train_records)
  assert all(set(r) == EVAL_KEYS | {"step"} for r in eval_records)
  assert train_records[-1]["train/loss"] < train_records[0]["train/loss"]  # it learns
  assert result == {"step": 8, **{k: eval_records[-1][k] for k in EVAL_KEYS}}
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["train"]["steps"] == 8 and saved["task"]["name"] == "standin"
  events = glob.glob(str(workdir / "events.out.tfevents.*"))
  assert events and os.path.getsize(events[0]) > 0
  # keep_checkpoints=2, checkpoint_every=4, steps=8 -> steps 4 and 8 kept
  assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "8"]


def _event_tags(path):
  """Scalar tags in a TFRecord event file (framing: u64 length, u32 crc, data, u32 crc)."""
  from tensorboardX.proto import event_pb2
  data, tags, pos = open(path, "rb").read(), set(), 0
  while pos < len(data):
    length = struct.unpack("<Q", data[pos:pos + 8])[0]
    event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
    tags |= {v.tag for v in event.summary.value}
    pos += 12 + length + 4
  return tags


def test_tensorboard_has_scalars(trained):
  workdir, _, _ = trained
  (path,) = glob.glob(str(workdir / "events.out.tfevents.*"))
  assert {"train/loss", "eval/loss", "train/learning_rate"} <= _event_tags(path)


def test_model_state_collections_are_trained_and_checkpointed(trained):
  import numpy as np
  import orbax.checkpoint as ocp
  workdir, _, _ = trained
  restored = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / "8" / "state")
  ema = np.asarray(restored["model_state"]["stats"]["ema"])
  assert ema.shape == (16,) and np.abs(ema).sum() > 0  # moved from its zero init


def test_evaluate_restores_latest_checkpoint(trained):
  workdir, config, result = trained
  task, model = build_standins(config)
  assert evaluate(config, str(workdir), task=task, model=model) == result


def test_rerun_of_finished_workdir_is_a_noop(trained):
  workdir, config, result = trained
  before = (workdir / "metrics.jsonl").read_text()
  task, model = build_standins(config)
  assert train(config, str(workdir), task=task, model=model) == result
  assert (workdir / "metrics.jsonl").read_text() == before


def test_huge_learning_rate_raises_naming_the_step(tmp_path):
  with pytest.raises(FloatingPointError, match=r"non-finite loss at step \d+"):
    _train(tmp_path, train=dict(learning_rate=1e30, warmup_steps=0, grad_clip=0.0))


def test_poisoned_batch_names_its_step_and_is_never_checkpointed(tmp_path):
  # Step 3 is poisoned; it is detected at step 4 (a log and checkpoint step), before saving.
  with pytest.raises(FloatingPointError, match=r"^non-finite loss at step 3 .*latest checkpoint: step None"):
    _train(tmp_path, task=dict(poison_step=3), train=dict(log_every=4))
  assert not os.listdir(tmp_path / "checkpoints")


def test_bad_batch_size_fails_before_compiling(tmp_path):
  with pytest.raises(ValueError, match="batch_size=0"):
    _train(tmp_path, train=dict(batch_size=0))


def test_one_trainer_trains_a_float_input_regression_task(tmp_path):
  """The trainer has no notion of tokens: float inputs, an MSE loss, a padded eval set."""
  from tests.train.standins import RegressionTask, Regressor, regression_config
  config = regression_config()
  task = RegressionTask(config)
  result = train(config, str(tmp_path), task=task, model=Regressor(features=3))
  records = [r for r in read_metrics(str(tmp_path)) if "eval/loss" in r]
  assert result["eval/examples"] == 13  # every eval example once, padding rows not counted
  assert records[-1]["eval/loss"] < 0.5 * records[0]["eval/loss"] or records[-1]["eval/loss"] < 0.05
  assert set(result) == {"step", "eval/loss", "eval/examples"}


def test_eval_is_exact_over_examples_not_a_mean_of_batch_means(tmp_path):
  """eval/loss equals the loss over all eval examples computed in one piece."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from attnlab.train.state import param_count  # noqa: F401  (the public state API stays)
  from tests.train.standins import RegressionTask, Regressor, regression_config
  config = regression_config(steps=4, eval_every=4, checkpoint_every=4)
  task, model = RegressionTask(config), Regressor(features=3)
  result = train(config, str(tmp_path), task=task, model=model)
  import orbax.checkpoint as ocp
  params = ocp.StandardCheckpointer().restore(tmp_path / "checkpoints" / "4" / "state")["params"]
  batches = task.eval_batches()
  x = np.concatenate([b["inputs"] for b in batches])
  y = np.concatenate([b["targets"] for b in batches])
  w = np.concatenate([b["weights"] for b in batches])
  pred = np.asarray(model.apply({"params": params}, jnp.asarray(x)))
  want = float(np.sum(w[:, None] * (pred - y) ** 2) / (w.sum() * 3))
  np.testing.assert_allclose(result["eval/loss"], want, rtol=1e-5)
  del jax
