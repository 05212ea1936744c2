"""icl_regression: batches, exact per-length metrics, bad input before compiling, a smoke run."""

import numpy as np
import pytest

from attnlab.config_loading import load_config
from attnlab.tasks import build_task

CONFIG = "configs/icl_regression.py"


def smoke(arg=""):
  return load_config(f"{CONFIG}:smoke=True" + (f",{arg}" if arg else ""), [])


def test_batches_follow_the_input_spec_and_every_length_is_evaluated_equally():
  task = build_task(smoke())
  task.validate()
  spec = task.input_spec()
  batch = next(task.train_iterator())
  assert batch["inputs"]["tokens"].shape == spec["inputs"]["tokens"].shape == (8, 13, 4)
  assert batch["inputs"]["valid"].shape == (8, 13) and batch["targets"].shape == (8,)
  assert task.eval_lengths() == [1, 4, 6, 7, 10, 12]  # step 3 plus N = 6 and slots = 12
  evals = task.eval_batches()
  lengths = [set(b["num_examples"].tolist()) for b in evals]
  assert lengths == [{n} for n in task.eval_lengths()]  # one length per batch, one batch each
  assert evals[0]["inputs"]["tokens"].shape == spec["inputs"]["tokens"].shape


def test_metrics_are_the_normalised_error_per_length():
  task = build_task(smoke())
  evals = task.eval_batches()
  sums = {}
  for b in evals:  # the zero predictor: nmse = mean(y^2) / d, about 1
    for k, (s, c) in task.metrics(np.zeros(8, np.float32), b).items():
      sums[k] = (sums.get(k, (0.0, 0.0))[0] + float(s), sums.get(k, (0.0, 0.0))[1] + float(c))
  mean = {k: s / c for k, (s, c) in sums.items() if c}
  y2 = {int(b["num_examples"][0]): float(np.mean(b["targets"] ** 2)) / task.dim for b in evals}
  assert mean["nmse_n10"] == pytest.approx(y2[10], rel=1e-5)
  assert mean["nmse"] == pytest.approx(mean["mse"] / task.dim, rel=1e-6)
  assert mean["length_growth"] == pytest.approx(y2[12] - y2[6], rel=1e-4, abs=1e-6)
  assert mean["length_gain"] == pytest.approx(-mean["length_growth"])
  assert mean["nmse_in"] == pytest.approx(np.mean([y2[n] for n in (1, 4, 6)]), rel=1e-5)


@pytest.mark.parametrize("leaf,message", [
    ("--config.task.train_examples=0", "train_examples"),
    ("--config.task.min_train_examples=9", "min_examples"),
    ("--config.task.eval_multiplier=0", "eval_multiplier"),
    ("--config.model.causal=True", "causal=False"),
])
def test_bad_config_is_a_one_line_error_before_compiling(leaf, message):
  from attnlab.train.trainer import setup
  with pytest.raises(ValueError, match=message):
    setup(load_config(f"{CONFIG}:smoke=True", [leaf]))


def test_a_few_training_steps_give_a_finite_loss(tmp_path):
  """Through the trainer (linear attention with the padding mask; mha takes the same path)."""
  from attnlab.train import trainer
  config = smoke("variant=linear")
  config.train.steps, config.train.eval_every, config.train.checkpoint_every = 3, 0, 0
  result = trainer.train(config, str(tmp_path))
  assert np.isfinite(result["eval/loss"]) and result["eval/examples"] == 6 * 8
  assert np.isfinite(result["eval/nmse_n12"])
