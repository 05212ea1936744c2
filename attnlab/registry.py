"""A small name -> object registry with decorators and helpful errors (scenic style)."""

from __future__ import annotations

import difflib
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
  """Raised for a name that is not registered; its message lists the registered names."""

  def __str__(self) -> str:  # KeyError quotes its message; we want a plain line.
    return str(self.args[0])


class Registry(Generic[T]):
  """Maps names to entries. `kind` is used in error messages ("variant", "task")."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, T] = {}

  def add(self, name: str, entry: T) -> T:
    """Registers `entry` under `name`; a duplicate name is an error."""
    if name in self._entries:
      raise ValueError(f"{self.kind} {name!r} is already registered")
    self._entries[name] = entry
    return entry

  def remove(self, name: str) -> T:
    """Unregisters `name` and returns its entry (tests that register temporary entries)."""
    self.get(name)
    return self._entries.pop(name)

  def register(self, name: str) -> Callable[[T], T]:
    """Decorator form of `add`."""
    return lambda entry: self.add(name, entry)

  def get(self, name: str) -> T:
    """Returns the entry for `name` or raises UnknownNameError listing what exists."""
    try:
      return self._entries[name]
    except KeyError:
      close = difflib.get_close_matches(name, self._entries, n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      raise UnknownNameError(
          f"unknown {self.kind} {name!r}{hint}; registered: {', '.join(sorted(self._entries))}"
      ) from None

  def names(self) -> list[str]:
    return sorted(self._entries)

  def items(self) -> Iterator[tuple[str, T]]:
    return iter(sorted(self._entries.items()))

  def __contains__(self, name: Any) -> bool:
    return name in self._entries

  def __len__(self) -> int:
    return len(self._entries)
