"""config.train.stop_at (Zoology's "train until 99% accuracy"): parsing, stopping at the first
eval that meets it, and a rerun of the stopped workdir not training further."""

import pytest

from attnlab.train import stop_at, trainer
from attnlab.train.metrics import read_metrics
from tests.train.standins import build_standins, standin_config


@pytest.mark.parametrize("spec", ["accuracy>=0.9", "eval/accuracy>0.9", "eval/loss<=x", "eval/accuracy == 1"])
def test_a_malformed_stop_at_is_a_one_line_error(spec):
  with pytest.raises(ValueError, match="config.train.stop_at") as e:
    stop_at.parse(spec)
  assert "\n" not in str(e.value)


def test_parse_and_met():
  assert stop_at.parse("") is None
  s = stop_at.parse("eval/accuracy>=0.99")
  assert s.met({"eval/accuracy": 0.995}) and not s.met({"eval/accuracy": 0.98})
  assert stop_at.parse("eval/loss<=0.5").met({"eval/loss": 0.4})
  with pytest.raises(ValueError, match="no metric 'eval/accuracy'.*eval/loss"):
    s.met({"eval/loss": 1.0})


def _train(workdir, **train):
  config = standin_config(steps=12, **train)
  task, model = build_standins(config)
  return trainer.train(config, str(workdir), task=task, model=model)


def test_training_stops_at_the_first_eval_that_meets_it_and_a_rerun_keeps_that_step(tmp_path):
  # Any loss is <= 1e9, so the first eval (step 4 of 12) meets it.
  out = _train(tmp_path, stop_at="eval/loss<=1e9")
  assert out["step"] == 4 and out["stopped_early"] == 1
  assert max(r["step"] for r in read_metrics(str(tmp_path))) == 4
  assert stop_at.stopped_step(str(tmp_path)) == 4
  again = _train(tmp_path, stop_at="eval/loss<=1e9")
  assert again["step"] == 4 and again["eval/loss"] == pytest.approx(out["eval/loss"], rel=1e-6)
  assert max(r["step"] for r in read_metrics(str(tmp_path))) == 4  # nothing trained on the rerun
  # The canary: a threshold no eval meets trains every step.
  assert _train(tmp_path / "full", stop_at="eval/loss<=-1")["step"] == 12
