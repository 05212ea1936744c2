"""The model registry: MODELS maps a task's `model` name to a builder of its Flax module.

A builder is `fn(backbone: TransformerConfig, model_cfg: ConfigDict, **task.model_kwargs())`
-> a linen module called as `module(inputs, *, deterministic=True)` (plus `decode=` for
models that decode). Every model is input adapter -> `Transformer` backbone -> head.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from attnlab.registry import Registry

MODELS = Registry("model")

F = TypeVar("F", bound=Callable)


def register_model(name: str) -> Callable[[F], F]:
  """Decorator: registers a model builder under `name`."""

  def decorator(fn: F) -> F:
    """Adds fn to MODELS."""
    return MODELS.add(name, fn)

  return decorator
