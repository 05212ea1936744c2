"""configs/*.py loading (ml_collections config_flags), argument parsing and --config overrides."""

import os
import subprocess
import sys

import pytest

from attnlab.config_lib import parse_arg
from attnlab.config_loading import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MQAR = os.path.join(ROOT, "configs", "mqar.py")


def test_arg_parsing_types_and_hybrid_lists():
  a = parse_arg("variant=based,mha,smoke=True", dict(variant="mha", smoke=False))
  assert a == {"variant": "based,mha", "smoke": True}
  with pytest.raises(ValueError, match="unknown config argument 'sise'"):
    parse_arg("sise=small", dict(size="default"))


def test_overrides_are_typed():
  c = load_config(MQAR + ":smoke=True", ["--config.model.d_model=48", "--config.train.learning_rate=1",
                                         "--config.model.variant=gqa", "train.steps=9",
                                         "--config.task.random_non_queries=false"])
  assert c.model.d_model == 48 and c.train.steps == 9 and c.model.variant == "gqa"
  assert c.train.learning_rate == 1.0 and isinstance(c.train.learning_rate, float)
  assert c.task.random_non_queries is False


def test_open_sections_take_new_keys_as_literals():
  """model.attn and model.layers.<i> take keys the config does not declare (the model checks
  them against the variants); values are Python literals, else strings."""
  c = load_config(MQAR + ":smoke=True", ["--config.model.attn.window=7", "--config.model.attn.form=chunked",
                                         "--config.model.attn.flag=True", "--config.model.layers.1.window=5"])
  assert dict(c.model.attn) == {"window": 7, "form": "chunked", "flag": True}
  assert c.model.layers.to_dict() == {"1": {"window": 5}}
  assert type(c.model.attn.window) is int  # a plain value, not a placeholder left behind
  c.model.attn.window = 3  # the result is unlocked and mutable
  assert c.model.attn.window == 3


def test_none_leaf_takes_a_literal(tmp_path):
  """config_flags cannot type a None leaf; it is parsed like a new key (literal, else string)."""
  path = tmp_path / "c.py"
  path.write_text("import ml_collections\n\ndef get_config(arg=None):\n"
                  "  return ml_collections.ConfigDict({'a': None, 'b': None})\n")
  c = load_config(str(path), ["--config.a=3", "--config.b=name"])
  assert c.a == 3 and c.b == "name"


def test_later_override_of_the_same_key_wins():
  assert load_config(MQAR, ["--config.train.steps=3", "--config.train.steps=4"]).train.steps == 4


@pytest.mark.parametrize("override,message", [
    ("--config.model.d_modle=3", "unknown config key 'model.d_modle'; model has: .*d_model"),
    ("--config.modl.d_model=3", "unknown config key 'modl'"),
    ("--config.train.stpes=3", "unknown config key 'train.stpes'"),  # only model.attn / layers are open
    ("--config.model.d_model.x=3", "model.d_model is not a section"),
    ("--config.model.d_model=abc", "--config.model.d_model expects an int, got 'abc'"),
    ("--config.train.learning_rate=fast", "expects a float"),
    ("--config.task.random_non_queries=maybe", "expects a boolean"),
    ("--config.train.steps", "Missing value for flag --config.train.steps"),
])
def test_bad_overrides(override, message):
  with pytest.raises(ValueError, match=message) as info:
    load_config(MQAR, [override])
  assert "\n" not in str(info.value)


@pytest.mark.parametrize("arg,message", [
    ("sise=small", "unknown config argument 'sise'"),
    ("size=huge", "size must be"),
    ("smoke=maybe", "config argument smoke: expected a boolean"),
])
def test_bad_config_argument_is_one_line(arg, message):
  """get_config's own error, not config_flags' traceback of it."""
  with pytest.raises(ValueError, match=message) as info:
    load_config(f"{MQAR}:{arg}")
  assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


def test_file_without_get_config(tmp_path):
  path = tmp_path / "empty.py"
  path.write_text("X = 1\n")
  with pytest.raises(ValueError, match="has no get_config"):
    load_config(str(path))


def test_loading_a_config_imports_no_jax():
  """configs are data: loading one (and its overrides) imports neither jax nor flax."""
  code = ("import sys; from attnlab.config_loading import load_config; "
          f"load_config({MQAR + ':smoke=True'!r}, ['--config.model.attn.window=4']); "
          "bad = [m for m in ('jax', 'flax') if m in sys.modules]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_missing_config_file():
  with pytest.raises(FileNotFoundError, match="config file not found"):
    load_config("configs/nope.py")


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py")))
def test_every_config_has_docstring_command_and_smoke(name):
  path = os.path.join(ROOT, "configs", name)
  text = open(path).read()
  assert "attnlab train --config configs/" + name in text, "the run command belongs in the docstring"
  c = load_config(path + ":smoke=True")
  assert c.train.steps <= 20


def test_variant_needs_set_model_shape():
  assert load_config(MQAR + ":variant=mega").model.num_heads == 1
  assert load_config(MQAR + ":variant=moh,smoke=True").model.num_heads == 4
  assert load_config(MQAR + ":variant=mha").model.num_heads == 2
