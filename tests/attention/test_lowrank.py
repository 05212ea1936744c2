"""Oracle and contract tests for the lowrank family: linformer, nystromformer.

Each oracle materialises the [Tq, Tk] attention matrix the variant implies from the
module's own params (Linformer: softmax(Q K^T E^T / sqrt d) F; Nystromformer:
F~ pinv(A~) B~ with the 6-step iterative pseudo-inverse written out here), forward and
gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import masks as M
from attnlab.attention.ops import lowrank as L
from tests.attention import contract
from tests.attention.oracle_parts import FWD_TOL, GRAD_TOL, out_proj, proj

VARIANTS = {
    "linformer": dict(num_heads=2, k_proj=8, max_len=32),
    "nystromformer": dict(num_heads=2, num_landmarks=8),
}


def check_against_oracle(name, module, variables, x, oracle_fn, context=None):
  """Forward and d(sum sin(y))/d(params, x) of module (variant `name`) vs oracle_fn(params, x, context)."""
  y = module.apply(variables, x, context=context)
  ref = oracle_fn(variables["params"], x, context)
  contract.assert_oracle(name, "fwd", y, ref, **FWD_TOL)
  loss_mod = lambda p, x: jnp.sum(jnp.sin(module.apply({"params": p}, x, context=context)))  # noqa: E731
  loss_ref = lambda p, x: jnp.sum(jnp.sin(oracle_fn(p, x, context)))  # noqa: E731
  g_mod = jax.jit(jax.grad(loss_mod, argnums=(0, 1)))(variables["params"], x)
  g_ref = jax.jit(jax.grad(loss_ref, argnums=(0, 1)))(variables["params"], x)
  err = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(g_mod), jax.tree.leaves(g_ref)))
  contract.assert_oracle(name, "grad", g_mod, g_ref, **GRAD_TOL)
  print(f"oracle max abs err: fwd {float(np.max(np.abs(np.asarray(y) - np.asarray(ref)))):.2e} grad {err:.2e}")


# ---- linformer -------------------------------------------------------------------------------


def linformer_oracle(p, x, ctx):
  """A = softmax(Q (E K)^T / sqrt d) F as an explicit [Tq, Tk] matrix, then A V."""
  src = x if ctx is None else ctx
  q, k, v = proj(x, p, "query"), proj(src, p, "key"), proj(src, p, "value")
  tk = k.shape[1]
  e, f = p["e_proj"][:, :tk], p["f_proj"][:, :tk]
  scores = jnp.einsum("bqhd,bkhd,pk->bhqp", q, k, e) / np.sqrt(q.shape[-1])
  a = jnp.einsum("bhqp,pk->bhqk", jax.nn.softmax(scores, -1), f)
  return out_proj(jnp.einsum("bhqk,bkhd->bqhd", a, v), p)


@pytest.mark.parametrize("length,context_len", [(16, None), (12, 20), (32, None)])
def test_linformer_oracle(length, context_len):
  x, ctx = contract.make_inputs(length=length, context_len=context_len)
  module, variables, _ = contract.init_apply("linformer", {**VARIANTS["linformer"], "causal": False}, x, ctx)
  check_against_oracle("linformer", module, variables, x, linformer_oracle, ctx)


def test_linformer_identity_projection_is_softmax_attention():
  """Reduction: k_proj = T = max_len with E = F = I is plain (non-causal) softmax attention."""
  t = 8
  x, _ = contract.make_inputs(length=t)
  module, variables, _ = contract.init_apply("linformer", dict(num_heads=2, k_proj=t, max_len=t, causal=False), x)
  p = {**variables["params"], "e_proj": jnp.eye(t), "f_proj": jnp.eye(t)}
  y = module.apply({"params": p}, x)
  q, k, v = proj(x, p, "query"), proj(x, p, "key"), proj(x, p, "value")
  w = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1]), -1)
  np.testing.assert_allclose(np.asarray(y), np.asarray(out_proj(jnp.einsum("bhqk,bkhd->bqhd", w, v), p)), **FWD_TOL)


def test_linformer_key_padding_and_errors():
  x, _ = contract.make_inputs(length=16)
  module, variables, y_full = contract.init_apply("linformer", VARIANTS["linformer"], x)
  # Padded keys are zeroed before the projection: outputs of the valid prefix equal a run
  # on the prefix alone (E's columns for padded keys multiply zero keys).
  valid = jnp.arange(16)[None, :].repeat(2, 0) < 10
  y = module.apply(variables, x, mask=M.KeyPadding(valid))
  y_prefix = module.apply(variables, x[:, :10])
  np.testing.assert_allclose(np.asarray(y[:, :10]), np.asarray(y_prefix), **FWD_TOL)
  assert not np.allclose(np.asarray(y[:, :10]), np.asarray(y_full[:, :10]))
  with pytest.raises(ValueError, match="KeyPadding"):
    module.apply(variables, x, mask=M.Causal())
  with pytest.raises(ValueError, match="exceeds max_len"):
    module.apply(variables, contract.make_inputs(length=40)[0])
  with pytest.raises(ValueError, match="causal-self"):
    contract.init_apply("linformer", {**VARIANTS["linformer"], "causal": True}, x)


# ---- nystromformer -----------------------------------------------------------------------------


def pinv_iter(a, n):
  """Xiong et al., 2021, eq. 16, written independently for one stack of matrices."""
  eye = jnp.eye(a.shape[-1])
  z = jnp.swapaxes(a, -1, -2) / (jnp.abs(a).sum(-2).max(-1) * jnp.abs(a).sum(-1).max(-1))[..., None, None]
  for _ in range(n):
    az = a @ z
    z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
  return z


def nystrom_oracle(m, iters, conv):
  def oracle(p, x, ctx):
    src = x if ctx is None else ctx
    q, k, v = proj(x, p, "query"), proj(src, p, "key"), proj(src, p, "value")
    d = q.shape[-1]
    q = q / np.sqrt(d)
    seg = lambda a: jnp.stack([a[:, i * (a.shape[1] // m):(i + 1) * (a.shape[1] // m)].mean(1)  # noqa: E731
                               for i in range(m)], 1)
    ql, kl = seg(q), seg(k)
    f = jax.nn.softmax(jnp.einsum("bqhd,bmhd->bhqm", q, kl), -1)
    a = jax.nn.softmax(jnp.einsum("bnhd,bmhd->bhnm", ql, kl), -1)
    bt = jax.nn.softmax(jnp.einsum("bmhd,bkhd->bhmk", ql, k), -1)
    s_hat = f @ pinv_iter(a, iters) @ bt  # the [Tq, Tk] matrix
    y = jnp.einsum("bhqk,bkhd->bqhd", s_hat, v)
    if conv:
      w = p["conv"]  # [ks, H]; y[t] += sum_j w[j] v[t + j - ks // 2] (zero padded)
      ks, t = w.shape[0], v.shape[1]
      vp = jnp.pad(v, ((0, 0), (ks // 2, ks // 2), (0, 0), (0, 0)))
      y = y + sum(w[j][None, None, :, None] * vp[:, j:j + t] for j in range(ks))
    return out_proj(y, p)
  return oracle


@pytest.mark.parametrize("length,context_len,conv", [(16, None, 0), (16, None, 3), (8, 24, 0)])
def test_nystromformer_oracle(length, context_len, conv):
  hp = {**VARIANTS["nystromformer"], "causal": False, "conv_kernel": conv}
  x, ctx = contract.make_inputs(length=length, context_len=context_len)
  module, variables, _ = contract.init_apply("nystromformer", hp, x, ctx)
  check_against_oracle("nystromformer", module, variables, x, nystrom_oracle(8, 6, conv), ctx)


def test_nystromformer_all_landmarks_is_softmax_attention():
  """Reduction: m = T landmarks (each a single token) and a converged pseudo-inverse give
  exact softmax attention (F~ = A~ = B~ = the softmax matrix, S pinv(S) S = S)."""
  t = 8
  x, _ = contract.make_inputs(length=t)
  module, variables, y = contract.init_apply(
      "nystromformer", dict(num_heads=2, num_landmarks=t, pinv_iterations=30, causal=False), x)
  p = variables["params"]
  q, k, v = proj(x, p, "query"), proj(x, p, "key"), proj(x, p, "value")
  w = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1]), -1)
  # 1e-4: S pinv(S) S in fp32 with pinv entries ~cond(S) amplifies rounding beyond plain attention's.
  np.testing.assert_allclose(np.asarray(y), np.asarray(out_proj(jnp.einsum("bhqk,bkhd->bqhd", w, v), p)),
                             atol=1e-4)


def test_iterative_pinv_converges_to_pinv():
  a = jax.nn.softmax(jax.random.normal(jax.random.key(0), (3, 6, 6)), -1)
  exact = np.linalg.pinv(np.asarray(a, np.float64))
  # 1e-3: fp32 iteration vs float64 pinv, whose entries here reach ~40 (ill-conditioned A).
  np.testing.assert_allclose(np.asarray(L.iterative_pinv(a, 30)), exact, atol=1e-3)
  # The iteration only approaches pinv(A): 6 steps (the paper's default) may still be far
  # from it for an ill-conditioned A, but the error shrinks with more steps.
  errs = [np.abs(np.asarray(L.iterative_pinv(a, n)) - exact).max() for n in (2, 6, 12)]
  assert errs[0] > errs[1] > errs[2], errs


def test_nystromformer_errors():
  x, _ = contract.make_inputs(length=12)
  with pytest.raises(ValueError, match="divisible by num_landmarks"):
    contract.init_apply("nystromformer", VARIANTS["nystromformer"], x)
  x, ctx = contract.make_inputs(length=16, context_len=16)
  with pytest.raises(ValueError, match="conv skip"):
    contract.init_apply("nystromformer", {**VARIANTS["nystromformer"], "conv_kernel": 3}, x, ctx)
  module, variables, _ = contract.init_apply("nystromformer", VARIANTS["nystromformer"], x)
  with pytest.raises(ValueError, match="extra mask"):
    module.apply(variables, x, mask=M.KeyPadding(jnp.ones((2, 16), bool)))


def test_ops_efficient_equal_reference():
  ks = jax.random.split(jax.random.key(1), 5)
  q, k, v = (jax.random.normal(kk, (2, 16, 2, 4)) for kk in ks[:3])
  e, f = (jax.random.normal(kk, (5, 16)) for kk in ks[3:])
  np.testing.assert_allclose(np.asarray(L.linformer_attention(q, k, v, e, f)),
                             np.asarray(L.linformer_reference(q, k, v, e, f)), atol=1e-5)
  np.testing.assert_allclose(np.asarray(L.nystrom_attention(q, k, v, num_landmarks=4)),
                             np.asarray(L.nystrom_reference(q, k, v, num_landmarks=4)), atol=1e-5)


# ---- contract ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_contract(name):
  contract.check_patterns(name, VARIANTS[name])
  contract.check_grads_finite(name, VARIANTS[name], pattern="noncausal-self")
