"""Declared cost classes of attention variants: compute and memory as functions of T.

Each registered variant states (`registry.register(..., cost=CostClass(...))`) how its
forward+backward compute and its temporary memory grow with the sequence length T at
its defaults, as a small expression in T and the variant's fixed hyperparameters:

  "T"               linear (fixed-size state, fixed window)      exponent 1
  "T*w"             a window / chunk / rank w fixed at defaults   exponent 1
  "T*log T"         sorting, power-of-two strides                 exponent 1 (log ignored)
  "T^1.5"           Sparse Transformer with stride ~ sqrt(T)      exponent 1.5
  "T^2/b"           a T x T/b score of block summaries            exponent 2
  "T^2"             dense attention                               exponent 2

Only T scales; every other name (w, b, k, c, d, ...) is a constant at the defaults, so
`exponent("T^2/b") == 2`. A sum takes its largest term (`"T^2/b + T*k*b"` -> 2), a product
adds exponents, `^` multiplies them, `log(...)`/`log T` counts 0. Aliases: "linear" = "T",
"quadratic" = "T^2", "constant" = "1"; "·", "×", "²" and "√" are accepted.
`attnlab.bench.cost` measures both exponents from the compiled program and checks them.
"""

from __future__ import annotations

import dataclasses
import re

ALIASES = {"linear": "T", "quadratic": "T^2", "constant": "1"}
_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([A-Za-z_][A-Za-z_0-9]*)|(.))")


def _normalise(expr: str) -> str:
  s = ALIASES.get(expr.strip(), expr.strip())
  s = s.replace("·", "*").replace("×", "*").replace("²", "^2").replace("**", "^")
  return re.sub(r"√\s*([A-Za-z0-9_]+)", r"(\1)^0.5", s)


class _Parser:
  """Recursive descent over `expr := term ('+' term)*`, `term := power (('*'|'/'|juxt) power)*`,
  `power := atom ('^' number)?`, `atom := number | name | 'log' atom | 'sqrt' atom | '(' expr ')'`;
  evaluates the exponent of T."""

  def __init__(self, text: str):
    self.text = text
    self.toks = []
    for num, name, other in _TOKEN.findall(text):
      if num or name:
        self.toks.append(("num", float(num)) if num else ("name", name))
      elif other.strip():
        self.toks.append(("op", other))
    self.i = 0

  def peek(self):
    return self.toks[self.i] if self.i < len(self.toks) else (None, None)

  def take(self, op=None):
    tok = self.peek()
    if tok[0] is None or (op is not None and tok != ("op", op)):
      raise ValueError(f"cannot parse cost class {self.text!r}: expected {op or 'a term'} at token {self.i}")
    self.i += 1
    return tok

  def expr(self) -> float:
    e = self.term()
    while self.peek() == ("op", "+"):
      self.take("+")
      e = max(e, self.term())
    return e

  def term(self) -> float:
    e = self.power()
    while True:
      kind, val = self.peek()
      if (kind, val) == ("op", "*"):
        self.take("*")
        e += self.power()
      elif (kind, val) == ("op", "/"):
        self.take("/")
        e -= self.power()
      elif kind in ("num", "name") or (kind, val) == ("op", "("):
        e += self.power()  # juxtaposition: "T log T"
      else:
        return e

  def power(self) -> float:
    e = self.atom()
    if self.peek() == ("op", "^"):
      self.take("^")
      kind, val = self.take()
      if kind != "num":
        raise ValueError(f"cannot parse cost class {self.text!r}: '^' needs a number")
      e *= val
    return e

  def atom(self) -> float:
    kind, val = self.take()
    if (kind, val) == ("op", "("):
      e = self.expr()
      self.take(")")
      return e
    if kind == "name" and val == "log":
      self.atom()
      return 0.0
    if kind == "name" and val == "sqrt":
      return 0.5 * self.atom()
    if kind == "num":
      return 0.0
    if kind == "name":
      return 1.0 if val == "T" else 0.0
    raise ValueError(f"cannot parse cost class {self.text!r}: unexpected {val!r}")


def exponent(expr: str) -> float:
  """The growth exponent in T of a cost expression with every other symbol fixed.

  exponent("T*w") == 1, exponent("T^1.5") == 1.5, exponent("T^2/b") == 2; a malformed
  expression is a ValueError."""
  if not isinstance(expr, str) or not expr.strip():
    raise ValueError(f"a cost class is a non-empty string such as 'T*w' or 'T^2', got {expr!r}")
  p = _Parser(_normalise(expr))
  e = p.expr()
  if p.i != len(p.toks):
    raise ValueError(f"cannot parse cost class {expr!r}: trailing {p.toks[p.i][1]!r}")
  return e


@dataclasses.dataclass(frozen=True)
class CostClass:
  """A variant's declared cost at its defaults, forward + backward, per layer.

  compute: FLOPs as an expression in T (see the module docstring), e.g. "T*w", "T^2".
  memory: temporary (activation) memory the same way, e.g. "T" for a blocked/chunked path.
  note: one line on where the cost comes from (shown by `attnlab list --json`).
  """
  compute: str
  memory: str
  note: str = ""

  def __post_init__(self):
    exponent(self.compute)  # validates
    exponent(self.memory)

  @property
  def compute_exponent(self) -> float:
    """Growth exponent of compute in T (2 for "T^2/b")."""
    return exponent(self.compute)

  @property
  def memory_exponent(self) -> float:
    """Growth exponent of temporary memory in T."""
    return exponent(self.memory)

  @property
  def subquadratic(self) -> bool:
    """Compute and memory both grow slower than T^2 at the defaults."""
    return self.compute_exponent < 2 and self.memory_exponent < 2

  def __str__(self) -> str:
    return f"compute {self.compute}, memory {self.memory}"


def cost(compute: str, memory: str, note: str = "") -> CostClass:
  """Shorthand for CostClass(compute, memory, note)."""
  return CostClass(compute, memory, note)
