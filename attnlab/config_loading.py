"""Loads `configs/<task>.py[:arg]` files and applies `--config.a.b=value` overrides."""

from __future__ import annotations

import ast
import importlib.util
import os

import ml_collections


def load_config(spec: str, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  """Imports the file in "path.py[:arg]", calls get_config(arg), then applies overrides.

  Each override is "a.b=value" (the "--config." prefix optional); an unknown key or a
  value of the wrong type is a one-line ValueError.
  """
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path}")
  module_spec = importlib.util.spec_from_file_location(f"attnlab_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path} has no get_config(arg) function")
  config = module.get_config(arg or None)
  for item in overrides:
    apply_override(config, item)
  return config


def apply_override(config: ml_collections.ConfigDict, item: str) -> None:
  """Sets one "a.b=value" leaf, typed like the existing value (new keys only under model.attn)."""
  item = item[len("--config."):] if item.startswith("--config.") else item
  key, sep, text = item.partition("=")
  if not sep:
    raise ValueError(f"config override {item!r} must look like --config.a.b=value")
  *parents, leaf = key.split(".")
  node = config
  for i, p in enumerate(parents):
    if not isinstance(node, ml_collections.ConfigDict) or p not in node:
      raise ValueError(f"unknown config key {'.'.join(parents[:i + 1])!r} (in --config.{key})")
    node = node[p]
  open_section = parents == ["model", "attn"]  # variant hyperparameters: validated against the variants
  if not isinstance(node, ml_collections.ConfigDict) or (leaf not in node and not open_section):
    known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
    raise ValueError(f"unknown config key {key!r}; {'.'.join(parents) or 'config'} has: {known}")
  old = node[leaf] if leaf in node else None
  node[leaf] = parse_value(text, old, key)


def parse_value(text: str, old, key: str):
  """Parses `text` as the type of `old` (bool, int, float, str, tuple); literal otherwise."""
  if isinstance(old, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError(f"--config.{key} expects a boolean, got {text!r}")
  if isinstance(old, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if old is None:
      return text
    raise ValueError(f"--config.{key} expects a {type(old).__name__}, got {text!r}") from None
  if isinstance(old, float) and isinstance(value, int):
    value = float(value)
  if old is not None and not isinstance(value, type(old)):
    raise ValueError(f"--config.{key} expects a {type(old).__name__}, got {text!r}")
  return value
