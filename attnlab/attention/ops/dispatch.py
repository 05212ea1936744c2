"""The one dispatch table for every attention op family (tokamax-style).

Each op family ("softmax", "softmax.sink", "sparse", "linear", "linear.gla",
"lowrank.nystrom", ...) registers its implementations here, keyed by an `impl` name:

  "reference"  fp32, obvious, materialised: the oracle (lowest priority)
  "xla"        the fast pure-JAX form (blocked / chunked / gathered)
  "pallas"     a Pallas kernel (registered by `kernels_pallas/` through `register_impl`)
  "cudnn"      a cuDNN kernel (softmax family, GPU)
  "auto"       not registered: the highest-priority implementation that can run the call

An implementation may declare `unsupported(*args, **kwargs) -> str | None`, called with the
same arguments as the op, which names why it cannot run them (None: it can). An explicit
impl that is not registered, or that is unsupported for the arguments, is a one-line
ValueError; "auto" skips unsupported ones and logs (once per distinct message, logger
`attnlab.attention.ops.dispatch`, level INFO) what it chose and why it skipped the others.
`form` (parallel / chunked / recurrent) is an argument of the op, not an impl.

    register_impl("softmax", "pallas", flash_fn, unsupported=why_not, priority=2)
    dispatch("softmax", "auto", q, k, v, mask=mask)   # -> the chosen implementation's output
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

IMPLS = ("reference", "xla", "pallas", "cudnn", "auto")

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Implementation:
  """One registered implementation: the function, its unsupported-reason test, its priority."""
  fn: Callable
  unsupported: Callable | None = None
  priority: int = 0


_TABLE: dict[str, dict[str, Implementation]] = {}
_LOGGED: set[str] = set()


def _check_impl_name(impl: str) -> None:
  if impl not in IMPLS:
    raise ValueError(f"unknown impl {impl!r}; valid: {', '.join(IMPLS)}")


def _family(family: str) -> dict[str, Implementation]:
  if family not in _TABLE:
    raise ValueError(f"unknown op family {family!r}; valid: {', '.join(families())}")
  return _TABLE[family]


def register_impl(family: str, impl: str, fn: Callable, *, unsupported: Callable | None = None,
                  priority: int = 0) -> Callable:
  """Registers `fn` as implementation `impl` of op `family` (replacing an earlier one).

  unsupported(*args, **kwargs) -> str | None: why `fn` cannot run these arguments (None:
  it can). priority: "auto" tries implementations from the highest priority down (ties in
  registration order). Returns `fn` (so it can close a definition).
  """
  _check_impl_name(impl)
  if impl == "auto":
    raise ValueError("'auto' is chosen by resolve(), not registered; use reference, xla, pallas or cudnn")
  _TABLE.setdefault(family, {})[impl] = Implementation(fn, unsupported, priority)
  return fn


def unregister_impl(family: str, impl: str) -> None:
  """Removes one registration (and the family once it has none left)."""
  table = _family(family)
  if impl not in table:
    raise ValueError(f"{family}: impl {impl!r} is not registered; registered: {', '.join(table)}")
  del table[impl]
  if not table:
    del _TABLE[family]


def families() -> tuple[str, ...]:
  """The registered op families, sorted."""
  return tuple(sorted(_TABLE))


def _ordered(table: dict[str, Implementation]) -> list[str]:
  return sorted(table, key=lambda name: -table[name].priority)  # stable: ties keep registration order


def implementations(family: str) -> tuple[str, ...]:
  """The implementations registered for `family`, in the order "auto" tries them."""
  return tuple(_ordered(_family(family)))


def _log_once(message: str) -> None:
  if message not in _LOGGED:
    _LOGGED.add(message)
    log.info(message)


def _reason(entry: Implementation, args, kwargs) -> str | None:
  return None if entry.unsupported is None else entry.unsupported(*args, **kwargs)


def resolve(family: str, impl: str, *args, **kwargs) -> str:
  """The implementation `dispatch(family, impl, *args, **kwargs)` would run.

  An explicit impl must be registered for `family` and supported for the arguments;
  "auto" picks the highest-priority supported one and logs its choice and the skipped
  ones' reasons. Anything else is a one-line ValueError.
  """
  table = _family(family)
  _check_impl_name(impl)
  if impl != "auto":
    if impl not in table:
      if impl == "pallas":
        raise ValueError(f"{family}: no Pallas kernel is registered for family {family!r}; "
                         f"use one of: {', '.join(_ordered(table))}, auto")
      raise ValueError(f"{family}: impl {impl!r} is not registered for this family; "
                       f"registered: {', '.join(_ordered(table))}, auto")
    reason = _reason(table[impl], args, kwargs)
    if reason:
      raise ValueError(f"{family} impl={impl!r} cannot run these arguments: {reason}")
    return impl
  skipped = []
  for name in _ordered(table):
    reason = _reason(table[name], args, kwargs)
    if reason is None:
      why = f" (skipped {'; '.join(skipped)})" if skipped else ""
      _log_once(f"{family}: impl='auto' chose {name!r}{why}")
      return name
    skipped.append(f"{name}: {reason}")
  raise ValueError(f"{family}: no implementation can run these arguments ({'; '.join(skipped)})")


def dispatch(family: str, impl: str, *args, **kwargs):
  """Runs the implementation `resolve(family, impl, *args, **kwargs)` picks on the arguments."""
  return _TABLE[family][resolve(family, impl, *args, **kwargs)].fn(*args, **kwargs)


__all__ = ["IMPLS", "Implementation", "dispatch", "families", "implementations", "register_impl",
           "resolve", "unregister_impl"]
