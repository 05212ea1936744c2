"""The attention-variant registry: names -> (module, hyperparameter dataclass, patterns)."""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Mapping

from attnlab.attention.complexity import CostClass
from attnlab.registry import Registry

# What a variant may support. "decode" means incremental decoding with a cache/state.
PATTERNS = ("causal-self", "noncausal-self", "causal-cross", "noncausal-cross", "decode")


@dataclasses.dataclass(frozen=True)
class VariantSpec:
  """A registered variant: its module class, hyperparameter dataclass, defaults and
  declared cost class (compute and memory in T at the defaults)."""
  name: str
  family: str
  module: type
  config: type
  defaults: Mapping[str, Any]
  patterns: frozenset
  paper: str
  cost: CostClass | None = None

  @property
  def subquadratic(self) -> bool:
    """Derived from the cost class: compute and memory both grow slower than T^2."""
    return self.cost is not None and self.cost.subquadratic

  def hyperparameters(self) -> dict[str, Any]:
    """Every hyperparameter with its default for this name."""
    base = {f.name: f.default for f in dataclasses.fields(self.config)}
    return {**base, **self.defaults}

  def make_config(self, **overrides):
    """The frozen hyperparameter dataclass; an unknown key is a one-line ValueError."""
    known = {f.name for f in dataclasses.fields(self.config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
      raise ValueError(
          f"variant {self.name!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
          f"it takes: {', '.join(sorted(known))}")
    return self.config(**{**self.defaults, **overrides})


VARIANTS: Registry[VariantSpec] = Registry("attention variant")


def register(name: str, *, family: str, config: type, patterns, paper: str = "",
             cost: CostClass | tuple | None = None, subquadratic: bool | None = None, **defaults):
  """Class decorator registering an attention module under `name`.

  `patterns` is a subset of PATTERNS; `cost` (required) is the variant's declared
  `CostClass` at its defaults, or a (compute, memory[, note]) tuple of expressions in T
  such as ("T*w", "T") or ("T^2", "T") (`attention.complexity`); tests measure both
  exponents from the compiled fwd+bwd program (`attnlab.bench.cost`). `subquadratic` is
  derived from it (compute and memory below T^2); passing it as well must agree.
  `defaults` override the config dataclass's defaults for this name (so `mqa` is `mha`'s
  module with num_kv_heads=1).
  """
  patterns = frozenset(patterns)
  bad = patterns - set(PATTERNS)
  if bad:
    raise ValueError(f"unknown patterns {sorted(bad)} for {name!r}; choose from {PATTERNS}")
  if cost is None:
    raise ValueError(f"variant {name!r} must declare cost=CostClass(compute, memory), e.g. ('T*w', 'T')")
  if isinstance(cost, (tuple, list)):
    cost = CostClass(*cost)
  if not isinstance(cost, CostClass):
    raise ValueError(f"cost of {name!r} must be a CostClass or a (compute, memory) tuple, got {cost!r}")
  if subquadratic is not None and bool(subquadratic) != cost.subquadratic:
    raise ValueError(f"variant {name!r}: subquadratic={subquadratic} contradicts its cost class ({cost})")

  def deco(module_cls):
    VARIANTS.add(name, VariantSpec(name, family, module_cls, config,
                                   types.MappingProxyType(dict(defaults)), patterns, paper, cost))
    return module_cls

  return deco


def build(name: str, **hyperparameters):
  """Builds the Flax module registered as `name` with the given hyperparameters."""
  spec = VARIANTS.get(name)
  return spec.module(cfg=spec.make_config(**hyperparameters), patterns=spec.patterns, variant=name)


def list_variants() -> list[dict[str, Any]]:
  """One dict per registered variant: name, family, patterns, cost classes (compute,
  memory, subquadratic), hyperparameters, paper."""
  return [
      dict(name=n, family=s.family, patterns=[p for p in PATTERNS if p in s.patterns],
           compute=s.cost.compute, memory=s.cost.memory, subquadratic=s.subquadratic,
           hyperparameters=s.hyperparameters(), paper=s.paper)
      for n, s in VARIANTS.items()
  ]
