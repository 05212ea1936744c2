"""configs/*.py loading, argument parsing and --config overrides."""

import os

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
  c = load_config(MQAR + ":smoke=True", ["--config.model.d_model=48", "--config.train.learning_rate=1e-2",
                                         "--config.model.attn.window=7", "--config.model.variant=gqa"])
  assert c.model.d_model == 48 and c.train.learning_rate == 0.01
  assert c.model.attn.window == 7 and c.model.variant == "gqa"


@pytest.mark.parametrize("override,message", [
    ("--config.model.d_modle=3", "unknown config key 'model.d_modle'"),
    ("--config.modl.d_model=3", "unknown config key 'modl'"),
    ("--config.model.d_model=abc", "expects a int"),
    ("--config.train.steps", "must look like"),
])
def test_bad_overrides(override, message):
  with pytest.raises(ValueError, match=message):
    load_config(MQAR, [override])


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
