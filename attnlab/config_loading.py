"""Loads `configs/<task>.py[:arg]` and `--config.a.b=value` overrides with ml_collections'
config_flags (absl flags), turning its errors into one-line ValueErrors.

How: the file is loaded, and `:arg` passed to its `get_config(arg)`, by the flag of
`config_flags.DEFINE_config_file`; the overrides are then parsed and typed by the flag of
`config_flags.DEFINE_config_dict`. Both live on a private `absl.flags.FlagValues` (never
the global FLAGS), so one process can load many configs (sweeps, tests) and argparse keeps
the rest of the command line.

Why two steps rather than `DEFINE_config_file` alone: `model.attn` (variant
hyperparameters) and `model.layers.<i>` (per-layer overrides) are open sections. Which keys
they take depends on the variants chosen, and the model checks them (listing what each
layer's variant takes), so config files need not predeclare the hyperparameters of every
variant. config_flags overrides only keys that exist, or with `accept_new_attributes` any
new key anywhere, which would let a misspelt `--config.train.stpes` through. Between the two
steps, each new key that an override names in an open section is declared as
`placeholder(object)`, which config_flags parses as a Python literal (else a string);
everywhere else an unknown key is an error that names the key and what its section has.

Errors: config_flags and absl report a traceback of get_config, a KeyError with a
"Did you mean" line, or `flag --config.x=v: ...`; each becomes one line here.
"""

from __future__ import annotations

import math
import os
import re
import sys
import warnings
from typing import Sequence

from absl import flags
import ml_collections
from ml_collections import config_dict, config_flags
from ml_collections.config_flags import config_path

PREFIX = "--config."


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Loads "path.py[:arg]" (`get_config(arg)`), then applies "--config.a.b=value" overrides.

  The "--config." prefix of an override is optional. Values are typed by the existing
  leaf (int, float, bool, str, tuple, ConfigDict); new keys in open sections are Python
  literals, else strings. Raises FileNotFoundError for a missing file and a one-line
  ValueError for an unknown key, a badly typed value or an error in get_config.
  A float leaf that is NaN or infinite (from the file or an override) is a ValueError too:
  no attnlab setting takes one. Returns an unlocked ConfigDict.
  """
  config = _load_file(spec)
  items = [_normalise(o) for o in overrides]
  declared = [d for d in (_check_key(config, item.partition("=")[0]) for item in items) if d]
  argv = ["attnlab", *(PREFIX + item for item in items)]
  flag_values = flags.FlagValues()
  try:
    config_flags.DEFINE_config_dict("config", config, flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
  except (flags.Error, KeyError, AttributeError, ValueError, TypeError, SyntaxError) as e:
    # SyntaxError: config_flags parses some values as Python literals ("(1, 2" for a str leaf)
    raise ValueError(_override_error(e, config, items)) from None
  finally:
    config.unlock()
  for holder, leaf in declared:  # the placeholders become plain values
    value = holder[leaf]
    del holder[leaf]
    holder[leaf] = value
  _check_finite(config)
  return config


def _check_finite(config: ml_collections.ConfigDict, prefix: str = "config") -> None:
  """Raises a one-line ValueError naming the first float leaf that is NaN or +-inf."""
  for key, value in config.items():
    name = f"{prefix}.{key}"
    if isinstance(value, ml_collections.ConfigDict):
      _check_finite(value, name)
    elif isinstance(value, float) and not math.isfinite(value):
      raise ValueError(f"{name} is {value}; it must be a finite number")


# The leaves every command needs (`attnlab.config_lib.base_config()` has them all); the trainer
# and tasks read them as attributes, so a file without one would fail with an AttributeError.
REQUIRED_KEYS = ("seed", "task.name", "model.variant", "model.num_layers", "model.d_model",
                 "model.num_heads", "train.steps", "train.batch_size", "train.learning_rate",
                 "mesh.data", "mesh.fsdp", "mesh.tensor")


def check_required_keys(config: ml_collections.ConfigDict, spec: str = "the config") -> None:
  """Raises a one-line ValueError naming the first of REQUIRED_KEYS that `config` lacks."""
  for key in REQUIRED_KEYS:
    node = config
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise ValueError(f"{spec.partition(':')[0]} has no config.{key} (config files start from "
                         f"attnlab.config_lib.base_config())")
      node = node[part]


def checked_setup(config: ml_collections.ConfigDict, spec: str = "the config"):
  """`attnlab.train.trainer.setup(config)` after `check_required_keys`, with sizes no machine holds (OverflowError,
  MemoryError while building host data or shapes) turned into a one-line ValueError: what
  `attnlab train/eval` and every sweep point run before compiling anything."""
  from attnlab.errors import SIZE_ERRORS
  from attnlab.train.trainer import setup
  check_required_keys(config, spec)
  try:
    return setup(config)
  except SIZE_ERRORS as e:
    raise ValueError(f"the config's sizes are too large to set up ({type(e).__name__}: {e})") from e


def _load_file(spec: str) -> ml_collections.ConfigDict:
  """get_config(arg) of the file in "path.py[:arg]", loaded by config_flags."""
  path = spec.partition(":")[0]
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path}")
  # config_flags loads every file as the module "config_config" and load_module() reuses one
  # found in sys.modules, so a file without get_config would run the previous file's.
  sys.modules.pop("config_config", None)
  argv = ["attnlab", f"--config={spec}"]
  flag_values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv,
                                           lock_config=False)
  try:
    with warnings.catch_warnings():  # config_flags' importlib load_module() is deprecated
      warnings.simplefilter("ignore", DeprecationWarning)
      flag_values(argv)
    config = holder.value
  except flags.IllegalFlagValueError as e:  # get_config's error, wrapped twice with a traceback
    cause = e
    while cause.__context__ is not None and _WRAPPED.search(str(cause)):
      cause = cause.__context__
    raise ValueError(_first_line(cause)) from None
  except AttributeError as e:
    if "get_config" not in str(e):
      raise ValueError(f"{path}: {_first_line(e)}") from None
    raise ValueError(f"{path} has no get_config(arg) function") from None
  except SyntaxError as e:  # the file itself does not parse
    raise ValueError(f"{path} is not valid Python: {e.msg} (line {e.lineno})") from None
  except Exception as e:  # noqa: BLE001  (importing the file ran its top level, which raised)
    raise ValueError(f"{path}: loading it raised {type(e).__name__}: {_first_line(e)}") from None
  if not isinstance(config, ml_collections.ConfigDict):
    error = vars(config).get("_error")  # config_flags defers an OSError of get_config
    if isinstance(error, OSError):
      raise error
    raise ValueError(f"{path}: get_config must return a ConfigDict, got {type(config).__name__}")
  return config


_WRAPPED = re.compile(r"^flag --config=|^Error whilst parsing config file")


def _normalise(item: str) -> str:
  """"--config.a.b=v" or "a.b=v" -> "a.b=v", with layer indices as keys ("layers.1" -> "layers['1']")."""
  item = item[len(PREFIX):] if item.startswith(PREFIX) else item
  key, sep, value = item.partition("=")
  return re.sub(r"\.(\d+)(?=\.|$)", r"['\1']", key) + sep + value


def _is_open(parent: tuple) -> bool:
  """Whether keys may be added under `parent`: model.attn and model.layers.<i>."""
  return parent == ("model", "attn") or (len(parent) == 3 and parent[:2] == ("model", "layers"))


def _check_key(config: ml_collections.ConfigDict, key: str) -> tuple | None:
  """Raises a one-line ValueError unless `key` exists or is new in an open section; declares
  such a new key (or a None leaf) as `placeholder(object)` and returns (its holder, its name),
  else None."""
  try:
    parts = config_path.split(key)
  except ValueError:
    raise ValueError(f"--config.{key}: not a config key (write --config.a.b=value)") from None
  *parents, leaf = parts
  node = config
  for i, part in enumerate(parents):
    if isinstance(node, ml_collections.ConfigDict) and part not in node and _is_open(tuple(parents[:i + 1])):
      node[part] = ml_collections.ConfigDict()  # a layer with no overrides yet
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise ValueError(f"unknown config key {'.'.join(map(str, parents[:i + 1]))!r} (in --config.{key})")
    node = node[part]
  if not isinstance(node, ml_collections.ConfigDict):
    raise ValueError(f"unknown config key {key!r}: {'.'.join(map(str, parents))} is not a section")
  if leaf in node and node.get_type(leaf) is not type(None):
    return None
  if leaf in node:  # a None leaf has no type for config_flags: it takes a literal, as a new key does
    del node[leaf]
  elif not _is_open(tuple(parents)):
    raise ValueError(f"unknown config key {key!r}; {'.'.join(map(str, parents)) or 'config'} has: "
                     f"{', '.join(sorted(node.keys()))}")
  node[leaf] = config_dict.placeholder(object)
  return node, leaf


_TYPE_NAMES = {int: "an int", float: "a float", bool: "a boolean", str: "a string", tuple: "a tuple",
               ml_collections.ConfigDict: "a dict"}


def _override_error(e: Exception, config: ml_collections.ConfigDict, items: Sequence[str]) -> str:
  """One line for an error of config_flags / absl while parsing `items`."""
  message = _first_line(e)
  if isinstance(e, SyntaxError):
    for item in items:
      key, _, text = item.partition("=")
      try:
        compile(text, "<override>", "eval")
      except SyntaxError:
        return f"--config.{key}: cannot parse {text!r} ({e.msg}); quote a string value, e.g. '\"{text}\"'"
    return f"a --config override does not parse ({e.msg})"
  for item in items:
    key, _, text = item.partition("=")
    if message.startswith(f"flag --config.{key}="):  # absl's IllegalFlagValueError
      try:
        kind = _TYPE_NAMES.get(config_path.get_type(key, config), "another value")
      except (KeyError, AttributeError, ValueError, TypeError):
        kind = "another value"
      return f"--config.{key} expects {kind}, got {text!r}"
  return message


def _first_line(e: BaseException) -> str:
  """The exception's message on one line (KeyError's quotes removed)."""
  text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
  lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
  return lines[0] if lines else type(e).__name__
