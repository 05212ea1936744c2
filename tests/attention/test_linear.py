"""Oracle, form-agreement and contract tests for the shared linear-attention core and the
linear family: linear, performer, cosformer, based."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import build
from attnlab.attention import masks as M
from attnlab.attention.ops.linear import feature_maps as fm
from attnlab.attention.ops.linear import core as la
from attnlab.attention.variants.linear import performer_projection
from tests.attention import contract
from tests.attention.oracle_parts import head_proj, rope_bt

VARIANTS = {
    "linear": dict(num_heads=2, chunk_size=4),
    "performer": dict(num_heads=2, chunk_size=4, num_features=24),
    "cosformer": dict(num_heads=2, chunk_size=4, max_len=40),
    "based": dict(num_heads=2, chunk_size=4, feature_dim=4, window=3),
}
NONCAUSAL = ["linear", "performer", "cosformer", "based"]
CROSS = ["cosformer"]  # linear/performer share its global-form path; cosformer adds key positions


# ---- the core: three forms and a brute-force loop ----------------------------------------
def _decay(kind, b, t, h, d, key):
  if kind == "none":
    return None
  if kind == "head":
    return -jnp.array([0.05, 0.7, 4.0])[:h]
  if kind == "step":
    return -jax.nn.softplus(jax.random.normal(key, (b, t, h)))
  return -3.0 * jax.nn.sigmoid(jax.random.normal(key, (b, t, h, d)))  # "channel" (GLA)


def _loop_oracle(q, k, v, g, normalize, scale, eps=1e-6):
  """The recurrence S_t = diag(exp g_t) S_{t-1} + k_t v_t^T, o_t = scale q_t S_t in numpy loops."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  b, t, h, d = q.shape
  g = np.zeros((b, t, h, 1)) if g is None else np.asarray(g, np.float64)
  g = np.broadcast_to(g if g.ndim == 4 else (g[None, None, :, None] if g.ndim == 1 else g[..., None]), (b, t, h, d))
  out = np.zeros(v.shape)
  for bi in range(b):
    for hi in range(h):
      s, z = np.zeros((d, v.shape[-1])), np.zeros(d)
      for ti in range(t):
        a = np.exp(g[bi, ti, hi])
        s = a[:, None] * s + np.outer(k[bi, ti, hi], v[bi, ti, hi])
        z = a * z + k[bi, ti, hi]
        num = scale * q[bi, ti, hi] @ s
        out[bi, ti, hi] = num / (scale * q[bi, ti, hi] @ z + eps) if normalize else num
  return out


@pytest.mark.parametrize("kind,normalize", [("none", True), ("step", False), ("channel", True)])
def test_core_forms_match_loop_oracle(kind, normalize):
  b, t, h, d, e = 2, 11, 3, 5, 4
  ks = jax.random.split(jax.random.key(1), 4)
  q, k = (jax.nn.elu(jax.random.normal(kk, (b, t, h, d))) + 1 for kk in ks[:2])
  v = jax.random.normal(ks[2], (b, t, h, e))
  g = _decay(kind, b, t, h, d, ks[3])
  kw = dict(log_decay=g, normalize=normalize, scale=0.7)
  ref = _loop_oracle(q, k, v, g, normalize, 0.7)
  par = la.linear_attention_parallel(q, k, v, **kw)
  chk = jax.jit(lambda q, k, v: la.linear_attention_chunked(q, k, v, chunk_size=4, **kw))(q, k, v)  # 2 chunks + pad
  rec, state = jax.jit(lambda q, k, v: la.linear_attention_recurrent(q, k, v, **kw))(q, k, v)
  for out in (par, chk, rec):
    np.testing.assert_allclose(np.asarray(out), ref, atol=2e-5, rtol=1e-5)
  # chunked prefill hands over the same state; recurrent continues from it exactly
  _, s_chk = la.linear_attention_chunked(q, k, v, chunk_size=4, return_state=True, **kw)
  np.testing.assert_allclose(np.asarray(s_chk), np.asarray(state), atol=2e-5, rtol=1e-5)
  sl = lambda a, i, j: a if a is None or a.ndim == 1 else a[:, i:j]  # noqa: E731
  _, s1 = la.linear_attention_chunked(q[:, :6], k[:, :6], v[:, :6], chunk_size=4, return_state=True,
                                      **{**kw, "log_decay": sl(g, 0, 6)})
  o2, _ = la.linear_attention_recurrent(q[:, 6:], k[:, 6:], v[:, 6:], initial_state=s1,
                                        **{**kw, "log_decay": sl(g, 6, t)})
  np.testing.assert_allclose(np.asarray(o2), ref[:, 6:], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["head", "channel"])  # per-head [H] decays: also test_decay.py
def test_core_chunked_grads_match_parallel(kind):
  b, t, h, d, e = 1, 10, 2, 4, 3
  ks = jax.random.split(jax.random.key(2), 4)
  q, k, v = (jax.random.normal(kk, (b, t, h, n)) for kk, n in zip(ks[:3], (d, d, e)))
  g = _decay(kind, b, t, h, d, ks[3])

  def grads(fn):
    return jax.jit(jax.grad(lambda q, k, v, g: jnp.sum(jnp.sin(fn(q, k, v, g))), argnums=(0, 1, 2, 3)))(q, k, v, g)

  par = grads(lambda q, k, v, g: la.linear_attention_parallel(q, k, v, log_decay=g))
  chk = grads(lambda q, k, v, g: la.linear_attention_chunked(q, k, v, log_decay=g, chunk_size=4))
  for a, c in zip(par, chk):
    if a is not None:
      np.testing.assert_allclose(np.asarray(c), np.asarray(a), atol=5e-5, rtol=1e-4)


def test_core_noncausal_global_form_and_errors():
  ks = jax.random.split(jax.random.key(3), 3)
  q = jax.random.normal(ks[0], (2, 7, 4, 3))
  k, v = jax.random.normal(ks[1], (2, 9, 2, 3)), jax.random.normal(ks[2], (2, 9, 2, 5))  # GQA, cross
  kr, vr = jnp.repeat(k, 2, axis=2), jnp.repeat(v, 2, axis=2)
  ref = jnp.einsum("bihd,bjhd,bjhe->bihe", q, kr, vr)
  out = la.linear_attention_chunked(q, k, v, causal=False)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-4, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(la.linear_attention_parallel(q, k, v, causal=False)),
                             np.asarray(ref), atol=1e-4, rtol=1e-5)
  with pytest.raises(ValueError, match="directional"):
    la.linear_attention_chunked(q, kr[:, :7], vr[:, :7], causal=False, log_decay=-jnp.ones(4))
  with pytest.raises(ValueError, match="log_decay must be"):
    la.linear_attention_chunked(q, kr[:, :7], vr[:, :7], log_decay=-jnp.ones(3))
  with pytest.raises(ValueError, match="form must be"):
    la.linear_attention(q, kr[:, :7], vr[:, :7], form="fused")


# ---- module oracles ------------------------------------------------------------------------
def init_params(name, hp, x, context=None):
  """(module, unboxed variables). Initialises through the cheap parallel form: the
  parameters do not depend on the form."""
  params = contract.init_variables(build(name, **{**hp, "form": "parallel"}), x, context=context)
  return build(name, **hp), params




def _softmax_window(q, k, v, allowed):
  s = jnp.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(q.shape[-1])
  w = jax.nn.softmax(jnp.where(allowed, s, -1e30), axis=-1)
  return jnp.einsum("bhij,bjhd->bihd", w, v)


def oracle(name, hp, params, x, context=None, causal=True, kv_valid=None):
  """The [T, S] attention matrix each variant implies, built the obvious way, from its params."""
  p = params["params"]
  src = x if context is None else context
  q, k, v = head_proj(x, p["query"]), head_proj(src, p["key"]), head_proj(src, p["value"])
  t, s = q.shape[1], k.shape[1]
  i, j = np.arange(t)[:, None], np.arange(s)[None, :]
  allowed = (j <= i) if causal else np.ones((t, s), bool)
  if kv_valid is not None:
    allowed = allowed[None, None] & np.asarray(kv_valid)[:, None, None, :]
  if name == "linear":
    phi = {"elu+1": lambda z: jnp.where(z > 0, z + 1, jnp.exp(z)), "relu": lambda z: jnp.maximum(z, 0),
           "identity": lambda z: z}[hp.get("feature_map", "elu+1")]
    a = jnp.einsum("bihd,bjhd->bhij", phi(q), phi(k))
  elif name == "performer":
    d = q.shape[-1]
    # The random projection is the module's decision, taken as data through its public
    # accessor; its distribution is tested in test_mechanism_helpers.py.
    w = performer_projection(build(name, **hp).cfg, d)
    phi = lambda z: jnp.exp(z @ w.T * d ** -0.25 - 0.5 * jnp.sum(z * z, -1, keepdims=True) / np.sqrt(d))  # noqa: E731
    a = jnp.einsum("bihd,bjhd->bhij", phi(q), phi(k)) / hp["num_features"]
  elif name == "cosformer":
    a = jnp.einsum("bihd,bjhd->bhij", jnp.maximum(q, 0), jnp.maximum(k, 0))
    a = a * np.cos(np.pi / 2 * (i - j) / hp["max_len"])
  elif name == "based":
    sc = jnp.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(q.shape[-1])
    a = 1 + sc + sc ** 2 / 2
  a = jnp.where(allowed, a, 0.0)
  if hp.get("normalize", True):
    a = a / (a.sum(-1, keepdims=True) + 1e-6)
  y = jnp.einsum("bhij,bjhe->bihe", a, v)
  if name == "based":
    pos = np.broadcast_to(np.arange(t), (x.shape[0], t))
    qw, kw = rope_bt(head_proj(x, p["window_query"]), pos), rope_bt(head_proj(x, p["window_key"]), pos)
    w = hp["window"]  # w keys, the query's own included: causal the last w, else centred
    before, after = (w - 1, 0) if causal else (w // 2, w - 1 - w // 2)
    allowed_w = allowed & (j >= i - before) & (j <= i + after)
    y = y + _softmax_window(qw, kw, head_proj(x, p["window_value"]), allowed_w)
  return jnp.einsum("bqhd,hdm->bqm", y, p["out"]["kernel"])


ORACLE_CASES = ([(n, True) for n in VARIANTS] + [(n, False) for n in NONCAUSAL]
                + [("linear-relu", True), ("linear-identity", False)])


def _hp(case):
  if case.startswith("linear-"):
    fmap = case.split("-", 1)[1]
    return "linear", {**VARIANTS["linear"], "feature_map": fmap, "normalize": fmap != "identity"}
  return case, dict(VARIANTS[case])


def _check_fwd_grad(name, hp, params, x, ref_fn, context=None, mask=None, grad_forms=("chunked",), fwd_forms=(),
                    atol=2e-5, gatol=5e-5):
  """Forms in `grad_forms`: output and d(sum sin y)/d(params, x) equal the oracle's; forms in
  `fwd_forms`: output only (the recurrent form is the decode path). Returns max errors."""
  loss_ref = lambda p, x: jnp.sum(jnp.sin(ref_fn(p, x)))  # noqa: E731
  ref = ref_fn(params, x)
  g_ref = jax.grad(loss_ref, argnums=(0, 1))(params, x)
  fwd_err = grad_err = 0.0
  for form in grad_forms + fwd_forms:
    module = build(name, **{**hp, "form": form})

    def loss_mod(p, x):
      y = module.apply(p, x, context=context, mask=mask)
      return jnp.sum(jnp.sin(y)), y

    suffix = "" if form == "chunked" else f"-{form}"  # chunked is the default form
    if form in grad_forms:
      (_, y), g_mod = jax.jit(jax.value_and_grad(loss_mod, argnums=(0, 1), has_aux=True))(params, x)
      contract.assert_oracle(name, "grad" + suffix, g_mod, g_ref, atol=gatol, rtol=1e-4)
      grad_err = max([grad_err] + [float(jnp.max(jnp.abs(a - b)))
                                   for a, b in zip(jax.tree.leaves(g_mod), jax.tree.leaves(g_ref))])
    else:
      y = jax.jit(lambda p, x: loss_mod(p, x)[1])(params, x)
    contract.assert_oracle(name, "fwd" + suffix, y, ref, atol=atol, rtol=1e-5)
    fwd_err = max(fwd_err, float(jnp.max(jnp.abs(y - ref))))
  return fwd_err, grad_err


def _padding(b, t):
  """A key-padding pattern: example 0 has a hole, example 1 a padded tail."""
  valid = np.ones((b, t), bool)
  valid[0, 2:4] = False  # holes shorter than based's (centred) window of 3: no window row
  valid[1, t - 1:] = False  # is fully masked
  return valid


@pytest.mark.parametrize("case,causal", ORACLE_CASES)
def test_oracle_all_forms(case, causal):
  """Oracle rule + form agreement: the chunked (default) form equals the materialised
  attention matrix, forward and gradients; the parallel and recurrent forms, forward.
  (test_core_* checks the forms' gradients against each other on the pure op.)
  Non-causal cases also pass a key-padding mask (its columns must vanish)."""
  name, hp = _hp(case)
  hp = {**hp, "causal": causal}
  x, _ = contract.make_inputs(length=14)  # 14 = 3 chunks of 4 + padding
  if hp.get("feature_map") == "identity":
    x = x * 0.3  # unnormalised outputs grow ~T |x|^3: keep sin(y) in a well-conditioned range
  _, params = init_params(name, hp, x)
  valid = None if causal else _padding(2, 14)
  mask = None if causal else M.KeyPadding(jnp.asarray(valid))
  errs = _check_fwd_grad(name, hp, params, x, lambda p, x: oracle(name, hp, p, x, causal=causal, kv_valid=valid),
                         mask=mask, grad_forms=("chunked",),
                         fwd_forms=("parallel", "recurrent") if causal else ("parallel",))
  print(f"{case} causal={causal}: max |fwd err| {errs[0]:.2e}, max |grad err| {errs[1]:.2e}")
  if not causal:
    with pytest.raises(ValueError, match="recurrent form is causal"):
      build(name, **{**hp, "form": "recurrent"}).apply(params, x)
    if name != "based":  # based's window branch takes any mask; the linear ones refuse others
      with pytest.raises(ValueError, match="key-padding"):
        build(name, **hp).apply(params, x, mask=M.SlidingWindow(left=2))


def test_performer_oracle_bites():
  """Canary: the oracle built on another draw of the projection (feature_seed 1) rejects
  the module, so the oracle's agreement is not an accident of the random features."""
  hp = {**VARIANTS["performer"], "causal": True}
  x, _ = contract.make_inputs(length=14)
  _, params = init_params("performer", hp, x)
  y = jax.jit(build("performer", **hp).apply)(params, x)
  ok, off = (float(jnp.max(jnp.abs(y - oracle("performer", h, params, x)))) for h in (hp, {**hp, "feature_seed": 1}))
  print(f"performer: |module - oracle| {ok:.1e}, |module - oracle on another projection| {off:.1e}")
  assert ok < 2e-5 and off > 1e-3, (ok, off)


@pytest.mark.parametrize("name", CROSS)
def test_oracle_noncausal_cross(name):
  hp = {**VARIANTS[name], "causal": False}
  x, ctx = contract.make_inputs(length=9, context_len=13)
  _, params = init_params(name, hp, x, ctx)
  _check_fwd_grad(name, hp, params, x, lambda p, x: oracle(name, hp, p, x, context=ctx, causal=False), context=ctx)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_contract(name):
  contract.check_patterns(name, VARIANTS[name])
  contract.check_grads_finite(name, VARIANTS[name])


@pytest.mark.parametrize("name,chunk", [(n, 1) for n in VARIANTS] + [("linear", 5)])
def test_decode_matches_full(name, chunk):
  contract.check_decode_matches_full(name, VARIANTS[name], chunk=chunk)


# ---- reductions and hyperparameter checks ------------------------------------------------
def test_performer_approximates_softmax():
  """FAVOR+ is an unbiased softmax-kernel estimator: with many features its output is close
  to softmax(q k^T / sqrt(d)) v, and much closer than with few features (checked on the
  module's own feature functions and core op, non-causal)."""
  ks = jax.random.split(jax.random.key(5), 3)
  q, k, v = (0.5 * jax.random.normal(kk, (2, 8, 2, 16)) for kk in ks)
  ref = _softmax_window(q, k, v, np.ones((8, 8), bool))
  errs = []
  for m in (16, 2048):
    w = fm.orthogonal_random_features(jax.random.key(0), m, 16)
    ql, kl = fm.favor_logits(q, w), fm.favor_logits(k, w)
    c, m = ql.max(-1, keepdims=True), kl.max((1, 3), keepdims=True)  # cancel in the normalised output
    y = la.linear_attention(fm.favor_features(ql, c), fm.favor_features(kl, m), v,
                            causal=False, normalize=True, eps=1e-6 * jnp.exp(-c - m))
    errs.append(float(jnp.linalg.norm(y - ref) / jnp.linalg.norm(ref)))
  print("performer rel. error vs softmax, M=16 / 2048:", errs)
  assert errs[1] < 0.1 and errs[1] < errs[0] / 4, errs


def test_cosformer_reduces_to_relu_linear_attention():
  """With M -> infinity the cos re-weighting is 1: cosformer == linear(relu, normalised)."""
  x, _ = contract.make_inputs(length=12)
  module, params, y = contract.init_apply("cosformer", dict(num_heads=2, max_len=10 ** 7), x)
  lin = build("linear", num_heads=2, feature_map="relu")
  np.testing.assert_allclose(np.asarray(lin.apply(params, x)), np.asarray(y), atol=1e-5, rtol=1e-5)


def test_hyperparameter_errors():
  x, _ = contract.make_inputs(length=8)
  with pytest.raises(ValueError, match="exceeds max_len"):
    contract.init_apply("cosformer", dict(num_heads=2, max_len=4), x)
  with pytest.raises(ValueError, match="fixed max_len"):
    contract.init_apply("cosformer", dict(num_heads=2, max_len=0), x)
  contract.init_apply("cosformer", dict(num_heads=2, max_len=0, causal=False), x)  # M = T: allowed
  with pytest.raises(ValueError, match="feature_map"):
    contract.init_apply("linear", dict(num_heads=2, feature_map="softmax"), x)
  with pytest.raises(ValueError, match="form must be"):
    contract.init_apply("linear", dict(num_heads=2, form="fused"), x)


def test_performer_features_fixed_by_seed():
  """Same feature_seed -> identical outputs across calls; another seed -> different."""
  x, _ = contract.make_inputs(length=8)
  module, params, y = contract.init_apply("performer", dict(num_heads=2), x)
  np.testing.assert_array_equal(np.asarray(module.apply(params, x)), np.asarray(y))
  y2 = build("performer", num_heads=2, feature_seed=1).apply(params, x)
  assert float(jnp.max(jnp.abs(y2 - y))) > 1e-4


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_performer_gradients_finite_at_head_dim_128(scale):
  # MQAR at d_model 256 (2 heads of 128): a fixed key shift of up to |w_r|^2/2 - 20 ~ 70 made
  # the useful key features ~e^-60 and the normaliser's gradient (1 / den^2) infinite
  # ("non-finite loss at step 2"). The running-max key stabiliser keeps it finite, and at
  # scale 1 (where the unstabilised oracle itself stays in fp32 range) equal to the oracle.
  x = scale * jax.random.normal(jax.random.key(0), (2, 32, 256))
  hp = dict(num_heads=2, num_features=256, chunk_size=8)
  module, params, y = contract.init_apply("performer", hp, x)
  grads = jax.grad(lambda p, x: jnp.sum(module.apply(p, x) ** 2), (0, 1))(params, x)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
  assert bool(jnp.isfinite(y).all())
  if scale == 1.0:
    contract.assert_oracle("performer", "fwd", y, oracle("performer", hp, params, x), atol=1e-5, rtol=1e-4)


def test_performer_gradients_finite_when_query_features_meet_no_keys():
  # q' = 10 w_A / |w_A| and k' = 10 w_B / |w_B|: the query's features sit on A, the keys'
  # on B, so the stabilised normaliser underflows to 0. With eps floored at 1e-6 e^-60 its
  # square underflowed too and the gradients were NaN (MQAR at d_model 256, step 40).
  d = 128
  hp = dict(num_heads=1, num_features=d, chunk_size=4)
  module, variables, _ = contract.init_apply("performer", hp, jnp.zeros((1, 8, d)))
  w = np.asarray(performer_projection(module.cfg, d))
  wa, wb = w[0] / np.linalg.norm(w[0]), w[1] / np.linalg.norm(w[1])
  u = (wa - wb) / np.linalg.norm(wa - wb)
  reflect = np.eye(d) - 2 * np.outer(u, u)  # a key kernel that maps w_A's direction to w_B's
  params = {**variables["params"], "query": {"kernel": jnp.eye(d)[:, None, :]},
            "key": {"kernel": jnp.asarray(reflect, jnp.float32)[:, None, :]}}
  x = 10 * d ** 0.25 * jnp.broadcast_to(jnp.asarray(wa, jnp.float32), (1, 8, d))
  grads = jax.grad(lambda p: jnp.sum(module.apply({"params": p}, x) ** 2))(params)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


def test_performer_gradients_finite_for_large_keys():
  # Keys of norm ~3 sqrt(D) at head_dim 32: shifting key features by the whole |w_r|^2/2 made
  # them denormal (~1e-35) and the gradients infinite; the bounded shift keeps them finite.
  x = 3.0 * jax.random.normal(jax.random.key(0), (2, 64, 64))
  module, params, _ = contract.init_apply("performer", dict(num_heads=2), x)
  grads = jax.grad(lambda p, x: jnp.sum(module.apply(p, x) ** 2), (0, 1))(params, x)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
