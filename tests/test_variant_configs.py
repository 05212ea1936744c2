"""Every registered variant builds and traces (jax.eval_shape, no compile) in both task
configs, or refuses the causal tasks with the one-line pattern error."""

import os

import pytest

from attnlab.attention import VARIANTS
from attnlab.config_loading import load_config
from attnlab.train.trainer import setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"mqar": os.path.join(ROOT, "configs", "mqar.py"),
           "char_lm": os.path.join(ROOT, "configs", "char_lm.py")}


def _noncausal_only(name):
  return not {"causal-self"} & set(VARIANTS.get(name).patterns)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("text") / "tiny.txt"
  path.write_text("the quick brown fox jumps over the lazy dog. " * 200)
  return str(path)


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("name", VARIANTS.names())
def test_variant_runs_in_task_config(name, config, text_file):
  overrides = [f"--config.task.path={text_file}"] if config == "char_lm" else []
  c = load_config(f"{CONFIGS[config]}:variant={name},smoke=True", overrides)
  if _noncausal_only(name):
    with pytest.raises(ValueError, match=f"variant '{name}' does not support causal-self"):
      setup(c)
    return
  run = setup(c)
  assert run is not None
