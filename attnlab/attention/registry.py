"""The attention-variant registry: names -> (module, hyperparameter dataclass, patterns)."""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Callable, Mapping

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
  state_size_fn: Callable | None = None

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

  def state_size(self, d_model: int, **overrides):
    """The decode state of one layer for one sequence at width `d_model` and these
    hyperparameters (`attention.state_size.StateSize`: fixed + per_token * T floats), or
    None when the variant has no decode form or declares no formula (`state_note` says which)."""
    if self.state_size_fn is None:
      return None
    return self.state_size_fn(self.make_config(**overrides), d_model)

  def state_note(self, d_model: int, **overrides) -> str:
    """The state size as `attnlab list` prints it: the float count of a bounded state,
    the growth form ("256·T") of a KV cache, or "-" and why not (no decode form; a KV cache whose formula is not declared)."""
    size = self.state_size(d_model, **overrides)
    if size is not None:
      return str(size)
    return "- (no decode)" if "decode" not in self.patterns else "- (grows with T: KV cache)"


VARIANTS: Registry[VariantSpec] = Registry("attention variant")


def register(name: str, *, family: str, config: type, patterns, paper: str = "",
             cost: CostClass | tuple | None = None, subquadratic: bool | None = None,
             state_size: Callable | None = None, **defaults):
  """Class decorator registering an attention module under `name`.

  `patterns` is a subset of PATTERNS; `cost` (required) is the variant's declared
  `CostClass` at its defaults, or a (compute, memory[, note]) tuple of expressions in T
  such as ("T*w", "T") or ("T^2", "T") (`attention.complexity`); tests measure both
  exponents from the compiled fwd+bwd program (`attnlab.bench.cost`). `subquadratic` is
  derived from it (compute and memory below T^2); passing it as well must agree.
  `state_size(cfg, d_model) -> StateSize` (`attention.state_size`) is the floats its decode
  state holds per sequence and layer; only a variant with the "decode" pattern declares one.
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

  if state_size is not None and "decode" not in patterns:
    raise ValueError(f"variant {name!r} declares state_size but has no 'decode' pattern")

  def deco(module_cls):
    VARIANTS.add(name, VariantSpec(name, family, module_cls, config,
                                   types.MappingProxyType(dict(defaults)), patterns, paper, cost,
                                   state_size))
    return module_cls

  return deco


def build(name: str, **hyperparameters):
  """Builds the Flax module registered as `name` with the given hyperparameters."""
  spec = VARIANTS.get(name)
  return spec.module(cfg=spec.make_config(**hyperparameters), patterns=spec.patterns, variant=name)


def state_size(name: str, d_model: int, **hyperparameters):
  """`VariantSpec.state_size` of the variant registered as `name` (None: no formula)."""
  return VARIANTS.get(name).state_size(d_model, **hyperparameters)


# The width at which `attnlab list` reports state sizes (head_dim 0 means d_model // num_heads).
LIST_D_MODEL = 256


def list_variants(d_model: int = LIST_D_MODEL) -> list[dict[str, Any]]:
  """One dict per registered variant: name, family, patterns, cost classes (compute,
  memory, subquadratic), decode state size at width `d_model` (`VariantSpec.state_note`),
  hyperparameters, paper."""
  return [
      dict(name=n, family=s.family, patterns=[p for p in PATTERNS if p in s.patterns],
           compute=s.cost.compute, memory=s.cost.memory, subquadratic=s.subquadratic,
           state_size=s.state_note(d_model), hyperparameters=s.hyperparameters(), paper=s.paper)
      for n, s in VARIANTS.items()
  ]
