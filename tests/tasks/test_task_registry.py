"""Task registry and config handling."""

import ml_collections
import pytest

from attnlab.registry import UnknownNameError
from attnlab.tasks import TASKS, Task, build_task


def test_registered_names():
  assert {"char_lm", "copy", "induction", "mqar", "selective_copy", "listops"} <= set(TASKS.names())
  assert TASKS.names() == sorted(TASKS.names())
  for name in TASKS.names():
    cls = TASKS.get(name)
    assert issubclass(cls, Task) and cls.name == name
    cfg = cls.default_config()
    assert cfg.name == name
    assert set(cls.config_help()) == set(cfg) - {"name"}  # every key documented


def test_unknown_task_lists_names(make_config):
  config = make_config("mqar")
  config.task.name = "mqr"
  with pytest.raises(UnknownNameError) as e:
    build_task(config)
  msg = str(e.value)
  assert "mqr" in msg and "did you mean 'mqar'" in msg
  for name in TASKS.names():
    assert name in msg


def test_unknown_key_is_rejected(make_config):
  config = make_config("copy")
  config.task.num_kv_pairs = 3
  with pytest.raises(ValueError, match="unknown config.task keys"):
    build_task(config).validate()


def test_missing_keys_take_defaults_and_task_eval_batches_wins():
  config = ml_collections.ConfigDict({"seed": 1, "task": {"name": "induction", "eval_batches": 5},
                                      "train": {"batch_size": 2, "eval_batches": 3}})
  task = build_task(config)
  task.validate()
  assert task.seq_len == 256 and task.vocab_size == 16 and len(task.eval_batches()) == 5


@pytest.mark.parametrize("name,overrides,match", [
    ("mqar", dict(seq_len=32, num_kv_pairs=16), "too short"),
    ("mqar", dict(vocab_size=8, num_kv_pairs=16), "too small"),
    ("copy", dict(seq_len=8, num_tokens=5), "too short"),
    ("selective_copy", dict(vocab_size=2), "vocab_size"),
    ("mqar", dict(num_train_examples=2), "smaller than batch_size"),
])
def test_validate_one_line_errors(name, overrides, match, make_config):
  with pytest.raises(ValueError, match=match) as e:
    build_task(make_config(name, **overrides)).validate()
  assert "\n" not in str(e.value)
