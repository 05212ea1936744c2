"""FLOPs counted on a jaxpr: dot_general 2*M*N*K, elementwise and transcendental ops by
output size; `scan` bodies times their length, `while` bodies times their static trip count
(XLA's cost analysis counts a loop body once), `cond` as its largest branch, and every
sub-jaxpr (jit, remat, custom_vjp / custom_jvp) recursed. Used by `attnlab.bench.cost`."""

from __future__ import annotations

import dataclasses
import math
import jax
import numpy as np
from jax.extend import core as jcore


TRANSCENDENTAL = frozenset("""
  exp exp2 log log1p expm1 tanh logistic sin cos tan asin acos atan atan2 sinh cosh asinh acosh atanh
  sqrt rsqrt cbrt erf erfc erf_inv lgamma digamma igamma pow""".split())
ELEMENTWISE = frozenset("""
  add add_any sub mul div rem max min neg sign floor ceil round is_finite integer_pow square abs
  select_n clamp eq ne lt le gt ge and or not xor shift_left shift_right_logical
  shift_right_arithmetic nextafter population_count conj real imag reduce_precision
  threefry2x32 random_bits""".split())
REDUCTIONS = frozenset("""
  reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or reduce_xor argmax argmin
  cumsum cumprod cummax cummin cumlogsumexp reduce""".split())
SCATTER_ARITH = frozenset(("scatter-add", "scatter_add", "scatter-mul", "scatter_mul", "scatter-min",
                           "scatter_min", "scatter-max", "scatter_max"))
MOVEMENT = frozenset("""
  gather scatter dynamic_slice dynamic_update_slice slice concatenate pad transpose broadcast_in_dim
  reshape squeeze expand_dims iota convert_element_type copy copy_p rev split bitcast_convert_type
  select_and_gather_add empty empty2 device_put optimization_barrier stop_gradient
  random_seed random_wrap random_unwrap random_fold_in random_split sharding_constraint
  mesh_cast stack unstack""".split())


@dataclasses.dataclass
class FlopCount:
  """What `count_flops` found: flops (dot_general + elementwise + reductions + sort),
  of which dot_flops and transcendentals; moved = output elements of data-movement ops
  (gathers, broadcasts, transposes; not in flops); unknown_loops: while loops whose trip
  count is not static (counted once); unknown_primitives: names counted as 0."""
  flops: float = 0.0
  dot_flops: float = 0.0
  transcendentals: float = 0.0
  moved: float = 0.0
  unknown_loops: int = 0
  unknown_primitives: set = dataclasses.field(default_factory=set)

  def add(self, other: "FlopCount", times: float = 1.0) -> None:
    self.flops += times * other.flops
    self.dot_flops += times * other.dot_flops
    self.transcendentals += times * other.transcendentals
    self.moved += times * other.moved
    self.unknown_loops += other.unknown_loops
    self.unknown_primitives |= other.unknown_primitives


def _size(aval) -> int:
  return int(math.prod(getattr(aval, "shape", ()) or ()))


def _out_size(eqn) -> int:
  return max([_size(v.aval) for v in eqn.outvars] or [0])


def _scalar(val):
  """A concrete integer/bool scalar as a Python int, else None (arrays, floats, tracers)."""
  if val is None or np.ndim(val) != 0:
    return None
  try:
    arr = np.asarray(val)
  except Exception:  # noqa: BLE001 -- a tracer or other non-concrete value is unknown
    return None
  return arr.item() if arr.dtype.kind in "iub" else None


def _value(atom, known):
  """Python value of a literal or a statically known scalar var, else None."""
  return _scalar(atom.val if isinstance(atom, jcore.Literal) else known.get(atom))


_FOLD = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
         "max": max, "min": min}


def _fold(eqn, known) -> None:
  """Constant-folds scalar integer arithmetic so loop bounds computed from constants are known."""
  name = eqn.primitive.name
  vals = [_value(a, known) for a in eqn.invars]
  if any(v is None for v in vals) or len(eqn.outvars) != 1:
    return
  if name in _FOLD and len(vals) == 2:
    known[eqn.outvars[0]] = _FOLD[name](*vals)
  elif name in ("convert_element_type", "copy", "copy_p") and len(vals) == 1:
    known[eqn.outvars[0]] = vals[0]


def _closed(j):
  """(Jaxpr, consts) of a Jaxpr or ClosedJaxpr."""
  if isinstance(j, jcore.ClosedJaxpr):
    return j.jaxpr, list(j.consts)
  return j, []


def _count(jaxpr, consts=(), in_known=None) -> FlopCount:
  """Counts one jaxpr; `in_known` maps invar index -> static scalar value."""
  known: dict = {}
  for v, c in zip(jaxpr.constvars, consts):
    if _scalar(c) is not None:
      known[v] = _scalar(c)
  for i, val in (in_known or {}).items():
    known[jaxpr.invars[i]] = val
  total = FlopCount()
  for eqn in jaxpr.eqns:
    total.add(_count_eqn(eqn, known))
    _fold(eqn, known)
  return total


def _known_inputs(atoms, known) -> dict:
  out = {}
  for i, a in enumerate(atoms):
    v = _value(a, known)
    if v is not None:
      out[i] = v
  return out


def _while_trips(eqn, known):
  """Trip count of a while loop whose cond is `counter <op> bound` with a static start,
  a static step and a static or loop-invariant bound; None when it is not static."""
  p = eqn.params
  cj, _ = _closed(p["cond_jaxpr"])
  bj, _ = _closed(p["body_jaxpr"])
  cn, bn = p["cond_nconsts"], p["body_nconsts"]
  cond_consts, init = eqn.invars[:cn], eqn.invars[cn + bn:]
  alias = {}  # outputs of dtype conversions in the cond -> their input
  for e in cj.eqns[:-1]:
    if e.primitive.name not in ("convert_element_type", "copy", "copy_p"):
      return None
    alias[e.outvars[0]] = alias.get(e.invars[0], e.invars[0])
  if not cj.eqns or cj.eqns[-1].primitive.name not in ("lt", "le", "gt", "ge", "ne"):
    return None
  cmp = cj.eqns[-1]
  if cmp.outvars[0] is not cj.outvars[0]:
    return None

  def carry_index(atom):
    if isinstance(atom, jcore.Literal) or atom not in cj.invars:
      return None
    i = cj.invars.index(atom)
    return i - cn if i >= cn else None

  def static(atom):  # value that does not change over the loop, or None
    if isinstance(atom, jcore.Literal):
      return _value(atom, known)
    if atom in cj.invars:
      i = cj.invars.index(atom)
      if i < cn:
        return _value(cond_consts[i], known)
      c = i - cn
      if bj.outvars[c] is bj.invars[bn + c]:  # passed through unchanged
        return _value(init[c], known)
    return None

  def step_of(c):  # body output c = body input c + literal step
    out = bj.outvars[c]
    for e in bj.eqns:
      if out in e.outvars and e.primitive.name in ("add", "sub") and len(e.invars) == 2:
        a, b = e.invars
        if a is bj.invars[bn + c]:
          s = _value(b, {})
          return None if s is None else (s if e.primitive.name == "add" else -s)
        if b is bj.invars[bn + c] and e.primitive.name == "add":
          return _value(a, {})
    return None

  lhs, rhs = (a if isinstance(a, jcore.Literal) else alias.get(a, a) for a in cmp.invars)
  op = cmp.primitive.name
  for counter, bound, flip in ((lhs, rhs, False), (rhs, lhs, True)):
    c = carry_index(counter)
    ub = static(bound)
    if c is None or ub is None:
      continue
    start, step = _value(init[c], known), step_of(c)
    if start is None or not step:
      continue
    rel = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le", "ne": "ne"}[op] if flip else op
    if rel == "lt" and step > 0:
      return max(0, -(-(ub - start) // step))
    if rel == "le" and step > 0:
      return max(0, (ub - start) // step + 1)
    if rel == "gt" and step < 0:
      return max(0, -(-(start - ub) // -step))
    if rel == "ge" and step < 0:
      return max(0, (start - ub) // -step + 1)
    if rel == "ne" and (ub - start) % step == 0 and (ub - start) // step >= 0:
      return (ub - start) // step
  return None


def _sub_jaxprs(params) -> list:
  out = []
  for val in params.values():
    if isinstance(val, (jcore.Jaxpr, jcore.ClosedJaxpr)):
      out.append(val)
    elif isinstance(val, (tuple, list)):
      out += [v for v in val if isinstance(v, (jcore.Jaxpr, jcore.ClosedJaxpr))]
  return out


def _count_eqn(eqn, known) -> FlopCount:
  name = eqn.primitive.name
  p = eqn.params
  fc = FlopCount()
  if name == "dot_general":
    (lc, _), _ = p["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    k = math.prod(lhs[i] for i in lc)
    fc.flops = fc.dot_flops = 2.0 * _out_size(eqn) * k
  elif name == "conv_general_dilated":
    rhs = eqn.invars[1].aval.shape
    fc.flops = fc.dot_flops = 2.0 * _out_size(eqn) * math.prod(rhs) / max(1, rhs[0])
  elif name in TRANSCENDENTAL:
    fc.flops = fc.transcendentals = float(_out_size(eqn))
  elif name in ELEMENTWISE:
    fc.flops = float(_out_size(eqn))
  elif name in REDUCTIONS:
    fc.flops = float(_size(eqn.invars[0].aval))
  elif name == "sort":
    shape = eqn.invars[0].aval.shape
    n = shape[p.get("dimension", -1)] if shape else 1
    fc.flops = float(_size(eqn.invars[0].aval)) * max(1.0, math.log2(max(n, 2)))
  elif name in ("top_k", "approx_top_k"):
    fc.flops = float(_size(eqn.invars[0].aval))
  elif name in SCATTER_ARITH:
    fc.flops = float(_size(eqn.invars[-1].aval))
  elif name in MOVEMENT:
    fc.moved = float(_out_size(eqn))
  elif name == "scan":
    body, consts = _closed(p["jaxpr"])
    inner = _count(body, consts, _known_inputs(eqn.invars[:p["num_consts"]], known))
    fc.add(inner, times=p["length"])
  elif name == "while":
    cj, cc = _closed(p["cond_jaxpr"])
    bj, bc = _closed(p["body_jaxpr"])
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    body = _count(bj, bc, _known_inputs(eqn.invars[cn:cn + bn], known))
    cond = _count(cj, cc, _known_inputs(eqn.invars[:cn], known))
    trips = _while_trips(eqn, known)
    if trips is None:
      fc.unknown_loops += 1
      trips = 1
    fc.add(body, times=trips)
    fc.add(cond, times=trips + 1)
  elif name == "cond":
    branches = [_count(*_closed(b), _known_inputs(eqn.invars[1:], known)) for b in p["branches"]]
    idx = _value(eqn.invars[0], known)
    if idx is not None and 0 <= idx < len(branches):
      fc.add(branches[idx])
    else:
      fc.add(max(branches, key=lambda b: b.flops))
  elif name == "pallas_call":
    grid = getattr(p.get("grid_mapping"), "grid", ()) or ()
    for j in _sub_jaxprs(p):
      fc.add(_count(*_closed(j)), times=math.prod(int(g) for g in grid) if grid else 1)
  else:
    subs = _sub_jaxprs(p)
    if not subs:
      fc.unknown_primitives.add(name)
    for j in subs:  # jit / pjit, custom_vjp_call, custom_jvp_call, remat, closed_call, ...
      jx, consts = _closed(j)
      ins = _known_inputs(eqn.invars, known) if len(jx.invars) == len(eqn.invars) else None
      fc.add(_count(jx, consts, ins))
  return fc


def count_flops(fn_or_jaxpr, *args) -> FlopCount:
  """FLOPs of `fn(*args)` (traced with jax.make_jaxpr; args may be ShapeDtypeStructs) or of a
  given (Closed)Jaxpr, with loop bodies multiplied by their trip counts."""
  if isinstance(fn_or_jaxpr, (jcore.Jaxpr, jcore.ClosedJaxpr)):
    return _count(*_closed(fn_or_jaxpr))
  return _count(*_closed(jax.make_jaxpr(fn_or_jaxpr)(*args)))


# ---- the fwd+bwd program of a variant ----------------------------------------------------
