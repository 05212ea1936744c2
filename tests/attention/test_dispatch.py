"""The one dispatch table (attnlab.attention.ops.dispatch): registration, explicit and
auto resolution, logging, and the errors for unknown or unsupported choices."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import masks as M
from attnlab.attention import ops
from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.linear import linear_attention
from attnlab.attention.ops.lowrank import nystrom_attention
from attnlab.attention.ops.softmax import sink_softmax_attention, softmax_attention
from attnlab.attention.ops.sparse import sparse_attention

FAKE = "test.fake"  # a family only these tests register (removed after each)


@pytest.fixture
def fake_family():
  """A registered test family: reference (-1) and xla (0) that tag their output."""
  D.register_impl(FAKE, "reference", lambda x, **kw: ("reference", x), priority=-1)
  D.register_impl(FAKE, "xla", lambda x, **kw: ("xla", x))
  D._LOGGED.clear()
  yield
  for impl in D.implementations(FAKE):
    D.unregister_impl(FAKE, impl)
  assert FAKE not in D.families()


def _qkv(b=1, t=8, h=2, d=8, seed=0):
  ks = jax.random.split(jax.random.key(seed), 3)
  return tuple(jax.random.normal(kk, (b, t, h, d), jnp.float32) for kk in ks)


def test_every_family_registers_reference_and_xla():
  fams = D.families()
  for top in ("softmax", "sparse", "linear", "lowrank"):
    assert any(f == top or f.startswith(top + ".") for f in fams), top
  for fam in fams:
    impls = D.implementations(fam)
    assert "reference" in impls and "xla" in impls, (fam, impls)
    assert impls[-1] == "reference", (fam, impls)  # the oracle is auto's last resort
  # auto prefers cudnn, then the Pallas kernel (GPU), then xla
  assert D.implementations("softmax")[:3] == ("cudnn", "pallas", "xla")


def test_ops_package_exposes_the_api():
  assert ops.softmax_attention is softmax_attention
  assert ops.IMPLS == ("reference", "xla", "pallas", "cudnn", "auto")
  assert ops.families() == D.families()


def test_explicit_impl_routes_to_the_registered_fn(fake_family):
  assert D.dispatch(FAKE, "xla", 3) == ("xla", 3)
  assert D.dispatch(FAKE, "reference", 3, flag=True) == ("reference", 3)
  assert D.resolve(FAKE, "reference", 3) == "reference"


@pytest.mark.parametrize("family,call", [
    ("softmax", lambda impl, q, k, v: softmax_attention(q, k, v, mask=M.Causal(), impl=impl)),
    ("softmax.sink", lambda impl, q, k, v: sink_softmax_attention(q, k, v, jnp.zeros(2), impl=impl)),
    ("linear", lambda impl, q, k, v: linear_attention(jax.nn.elu(q) + 1, jax.nn.elu(k) + 1, v, impl=impl)),
    ("lowrank.nystrom", lambda impl, q, k, v: nystrom_attention(q, k, v, num_landmarks=4, impl=impl)),
])
def test_family_entry_points_go_through_the_table(monkeypatch, family, call):
  """Replacing a family's registered xla fn changes what its public entry point runs."""
  q, k, v = _qkv()
  want = call("reference", q, k, v)
  np.testing.assert_allclose(call("xla", q, k, v), want, atol=2e-5)
  entry = D._TABLE[family]["xla"]
  monkeypatch.setitem(D._TABLE[family], "xla", D.Implementation(lambda *a, **kw: "sentinel", None,
                                                                 entry.priority))
  assert call("xla", q, k, v) == "sentinel"


def test_sparse_entry_point_reference_matches_gathers():
  q, k, v = _qkv(t=16)
  allowed = lambda qp, kp: (kp <= qp) & (qp - kp < 4)  # noqa: E731  (a causal window of 4)
  table = lambda blocks: (blocks[:, None] * 4 + jnp.arange(-4, 4)[None, :])[None]  # noqa: E731
  kw = dict(block_q=4, allowed=allowed)
  np.testing.assert_allclose(sparse_attention(q, k, v, table, impl="xla", **kw),
                             sparse_attention(q, k, v, table, impl="reference", **kw), atol=1e-5)
  with pytest.raises(ValueError, match="needs the exact predicate"):
    sparse_attention(q, k, v, table, block_q=4, impl="reference")


def test_auto_logs_its_choice_and_why_once(fake_family, caplog):
  D.register_impl(FAKE, "cudnn", lambda x, **kw: ("cudnn", x),
                  unsupported=lambda x, **kw: None if x > 0 else "x must be positive", priority=1)
  with caplog.at_level(logging.INFO, logger=D.__name__):
    assert D.dispatch(FAKE, "auto", 1) == ("cudnn", 1)
    for _ in range(3):
      assert D.dispatch(FAKE, "auto", -1) == ("xla", -1)
  messages = [r.getMessage() for r in caplog.records if r.name == D.__name__]
  assert messages == [f"{FAKE}: impl='auto' chose 'cudnn'",
                      f"{FAKE}: impl='auto' chose 'xla' (skipped cudnn: x must be positive)"]


def test_auto_prefers_a_higher_priority_fake_impl_and_skips_it_when_unsupported(fake_family, caplog):
  q, k, v = _qkv()
  D.register_impl(FAKE, "pallas", lambda x, **kw: ("pallas", x),
                  unsupported=lambda x, **kw: None if kw.get("causal", True) else "fake kernel is causal only",
                  priority=5)
  assert D.implementations(FAKE)[0] == "pallas"
  with caplog.at_level(logging.INFO, logger=D.__name__):
    assert D.dispatch(FAKE, "auto", q)[0] == "pallas"
    assert D.dispatch(FAKE, "auto", q, causal=False)[0] == "xla"
  assert any("skipped pallas: fake kernel is causal only" in r.getMessage() for r in caplog.records)
  with pytest.raises(ValueError, match="fake kernel is causal only"):
    D.dispatch(FAKE, "pallas", q, causal=False)


def test_auto_reports_cudnn_fallback_reason_on_cpu(caplog):
  q, k, v = _qkv()
  if jax.default_backend() == "gpu":
    pytest.skip("cudnn may run here")
  D._LOGGED.clear()
  with caplog.at_level(logging.INFO, logger=D.__name__):
    assert ops.resolve("softmax", "auto", q, k, v, mask=M.Causal()) == "xla"
  (msg,) = [r.getMessage() for r in caplog.records if r.name == D.__name__]
  assert msg.startswith("softmax: impl='auto' chose 'xla' (skipped cudnn: cudnn needs a GPU")


def test_unsupported_explicit_combination_is_a_one_line_value_error():
  q, k, v = _qkv()
  with pytest.raises(ValueError, match=r"softmax impl='cudnn' cannot run these arguments: ") as info:
    softmax_attention(q, k, v, impl="cudnn")
  assert "\n" not in str(info.value)


def test_unregistered_impls_raise():
  q, k, v = _qkv()
  with pytest.raises(ValueError, match="softmax impl='pallas' cannot run these arguments: pallas kernels need a GPU"):
    softmax_attention(q, k, v, impl="pallas")  # registered, but not on CPU without interpret mode
  with pytest.raises(ValueError, match="linear impl='pallas' cannot run these arguments: pallas kernels need a GPU"):
    linear_attention(q, k, v, impl="pallas")  # the chunked linear kernel: GPU, or CPU in interpret mode
  with pytest.raises(ValueError, match="no Pallas kernel is registered for family 'linear.delta_rule'"):
    D.resolve("linear.delta_rule", "pallas", q, k, v)
  with pytest.raises(ValueError, match="impl 'cudnn' is not registered for this family; registered: pallas, xla, "
                                       "reference"):
    linear_attention(q, k, v, impl="cudnn")


def test_unknown_family_and_impl_list_the_valid_ones(fake_family):
  with pytest.raises(ValueError, match=r"unknown op family 'softmx'; valid: .*softmax"):
    D.resolve("softmx", "xla")
  with pytest.raises(ValueError, match="unknown impl 'flash'; valid: reference, xla, pallas, cudnn, auto"):
    D.resolve(FAKE, "flash")
  with pytest.raises(ValueError, match="unknown impl"):
    D.register_impl(FAKE, "triton", lambda: None)
  with pytest.raises(ValueError, match="'auto' is chosen by resolve"):
    D.register_impl(FAKE, "auto", lambda: None)


def test_auto_with_nothing_supported_raises(fake_family):
  for impl, priority in (("reference", -1), ("xla", 0)):
    D.register_impl(FAKE, impl, lambda x: x, unsupported=lambda x, impl=impl: f"{impl} says no", priority=priority)
  with pytest.raises(ValueError, match="no implementation can run these arguments .xla: xla says no; "
                                       "reference: reference says no"):
    D.resolve(FAKE, "auto", 0)
