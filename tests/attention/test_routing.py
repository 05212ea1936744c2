"""The Routing Transformer (`routing`) against its paper's definition (Roy et al., 2021, Sec. 4.1).

Definition, per routing head: queries and keys are compared with k-means centroids by
cosine similarity; every centroid c takes its own top-w nearest queries Q_c and its own
top-w nearest keys K_c (w = window, or ceil(T / C) when window = 0, at most T); query i
attends to key j in centroid c iff i in Q_c and j in K_c (and j <= i when causal); a
query in several Q_c gets the mean of its per-centroid outputs (over the centroids where
it saw a key), a query in none outputs zeros. Local heads: softmax over a sliding window
of `local_window` keys, the query's own included.

The oracle below (`topw_members`, `routing_allowed`, `local_allowed`, `oracle_heads`) is
written from that definition in numpy / jnp and imports nothing of the module's code.
The same-cluster test checks the library's decision and mask (`ops.sparse.routed`, the
code under test) against the definition and shows that the old rank-window rule fails it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import build, masks as M
from attnlab.attention.ops.sparse import routed as R  # the code under test (same-cluster, op tests)
from tests.attention import contract

FWD_TOL = dict(atol=2e-5, rtol=1e-5)
GRAD_TOL = dict(atol=5e-5, rtol=1e-4)


# ---- the oracle: the definition in numpy (decision) and jnp (differentiable attention) ------


def heads(x, p, name):
  """x [B, T, d] @ params[name]["kernel"] [d, H, D] -> [B, T, H, D]."""
  return jnp.einsum("btd,dhk->bthk", x, p[name]["kernel"])


def topw_members(x, cents, window):
  """bool [B, H, C, T]: position t is among the top-w of centroid c by cosine similarity."""
  x, cents = np.asarray(x, np.float64), np.asarray(cents, np.float64)
  t, c = x.shape[1], cents.shape[1]
  w = min(window if window else -(-t // c), t)
  cos = np.einsum("bthd,hcd->bhct", x / np.linalg.norm(x, axis=-1, keepdims=True),
                  cents / np.linalg.norm(cents, axis=-1, keepdims=True))
  top = np.argsort(-cos, axis=-1, kind="stable")[..., :w]
  member = np.zeros(cos.shape, bool)
  np.put_along_axis(member, top, True, axis=-1)
  return member


def routing_allowed(q, k, cq, ck, window, causal):
  """bool [B, H, C, Tq, Tk]: query i meets key j in centroid c (definition above)."""
  mq, mk = topw_members(q, cq, window), topw_members(k, ck, window)
  ok = mq[..., :, None] & mk[..., None, :]
  if causal:
    ok &= np.tril(np.ones(ok.shape[-2:], bool))
  return ok


def local_allowed(t, window, causal):
  """bool [T, T]: a window of `window` keys, the query's own included; causal t-w+1..t,
  else centred t - floor(w/2) .. t + w - 1 - floor(w/2)."""
  d = np.arange(t)[:, None] - np.arange(t)[None, :]  # query - key
  before, after = (window - 1, 0) if causal else (window // 2, window - 1 - window // 2)
  return (d <= before) & (-d <= after)


def softmax_rows(q, k, v, allowed):
  """softmax(q k^T / sqrt(D)) over allowed [B|1, H|1, Tq, Tk] -> (out [B, Tq, H, Dv], row has a key)."""
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  allowed = np.broadcast_to(allowed, s.shape)
  row = allowed.any(-1)
  p = jax.nn.softmax(jnp.where(allowed, s, -1e30), axis=-1) * row[..., None]
  return jnp.einsum("bhqk,bkhd->bqhd", p, v), row


def oracle_heads(q, k, v, allowed):
  """Routing heads from per-centroid masks [B, H, C, Tq, Tk]: per-centroid attention, mean
  over the centroids in which the query saw a key, zeros where none."""
  outs, rows = zip(*[softmax_rows(q, k, v, allowed[:, :, c]) for c in range(allowed.shape[2])])
  seen = np.stack(rows, 0).transpose(0, 1, 3, 2)[..., None]  # [C, B, Tq, H, 1]
  total = sum(o * s for o, s in zip(outs, seen))
  return total / np.maximum(seen.sum(0), 1)


def module_oracle(hp, variables, x, ctx):
  """(oracle_fn(params, x, ctx), info): the routing decision is computed once here from the
  concrete params and centroids and held fixed (it is piecewise constant in the inputs)."""
  p0, km = variables["params"], variables.get("kmeans", {})
  h, causal = hp["num_heads"], hp["causal"]
  n_local = h // 2 if hp.get("num_local_heads", -1) < 0 else hp["num_local_heads"]
  n_route = h - n_local
  share = hp.get("share_qk", False)

  def qkv(p, x, ctx):
    src = x if ctx is None else ctx
    q, v = heads(x, p, "query"), heads(src, p, "value")
    k_local = heads(src, p, "key") if n_local else None
    if share:
      return q, q[:, :, :n_route], k_local, v
    k = heads(src, p, "key")
    return q, k[:, :, :n_route], k[:, :, n_route:], v

  allowed, info = None, {}
  if n_route:
    cq = km["centroids"] if "centroids" in km else km["query_centroids"]
    ck = km["centroids"] if "centroids" in km else km["key_centroids"]
    q, kr, _, _ = qkv(p0, x, ctx)
    allowed = routing_allowed(q[:, :, :n_route], kr, cq, ck, hp["window"], causal)
    mq = topw_members(q[:, :, :n_route], cq, hp["window"])
    info = dict(q_members=mq, k_members=topw_members(kr, ck, hp["window"]), times=mq.sum(2))
  local = local_allowed(x.shape[1], hp.get("local_window", 64), causal)[None, None] if n_local else None

  def oracle(p, x, ctx):
    q, kr, kl, v = qkv(p, x, ctx)
    parts = []
    if n_route:
      parts.append(oracle_heads(q[:, :, :n_route], kr, v[:, :, :n_route], allowed))
    if n_local:
      parts.append(softmax_rows(q[:, :, n_route:], kl, v[:, :, n_route:], local)[0])
    y = jnp.concatenate(parts, axis=2)
    return jnp.einsum("bqhd,hdm->bqm", y, p["out"]["kernel"])

  return oracle, info


def assert_module_matches(hp, variables, module, x, ctx, oracle):
  """Forward and d(sum sin(y))/d(params, x) of the module vs the oracle."""
  contract.assert_oracle("routing", "fwd", module.apply(variables, x, context=ctx), oracle(variables["params"], x, ctx),
                         **FWD_TOL)
  rest = {k: v for k, v in variables.items() if k != "params"}
  loss_mod = lambda p, x: jnp.sum(jnp.sin(module.apply({"params": p, **rest}, x, context=ctx)))  # noqa: E731
  loss_ref = lambda p, x: jnp.sum(jnp.sin(oracle(p, x, ctx)))  # noqa: E731
  g_mod = jax.jit(jax.grad(loss_mod, argnums=(0, 1)))(variables["params"], x)
  g_ref = jax.jit(jax.grad(loss_ref, argnums=(0, 1)))(variables["params"], x)
  contract.assert_oracle("routing", "grad", g_mod, g_ref, **GRAD_TOL)


# ---- the module against the oracle -------------------------------------------------------------

CASES = {  # lengths span several windows and are not multiples of w
    # C*w = 24 < 37: some queries are taken by no centroid (zeros from the routing heads)
    "causal-mixed": dict(num_heads=4, num_local_heads=2, num_clusters=3, window=8, local_window=5, causal=True),
    # window 0: w = ceil(29 / 4) = 8, C*w = 32 > 29: queries taken by several centroids; shared QK
    "noncausal-shared-qk": dict(num_heads=2, num_local_heads=1, num_clusters=4, window=0, local_window=4,
                                causal=False, share_qk=True),
    # separate query and key centroids; routing heads only; C*w = 21 < 27 keys
    "noncausal-cross": dict(num_heads=2, num_local_heads=0, num_clusters=3, window=7, causal=False,
                            shared_centroids=False),
}
LENGTHS = {"causal-mixed": (37, None), "noncausal-shared-qk": (29, None), "noncausal-cross": (20, 27)}


@pytest.mark.parametrize("case", list(CASES))
def test_routing_matches_definition(case):
  hp = CASES[case]
  length, context_len = LENGTHS[case]
  x, ctx = contract.make_inputs(length=length, context_len=context_len)
  module, variables, _ = contract.init_apply("routing", hp, x, ctx)
  oracle, info = module_oracle(hp, variables, x, ctx)
  # The library's decision is the definition's (sets compared, order aside).
  _, inter = module.apply(variables, x, context=ctx, mutable=["intermediates"])
  for name, want in (("query_index", info["q_members"]), ("key_index", info["k_members"])):
    idx = np.asarray(inter["intermediates"][name][0])
    got = np.zeros(want.shape, bool)
    np.put_along_axis(got, idx, True, axis=-1)
    np.testing.assert_array_equal(got, want, err_msg=name)
  times = info["times"]  # [B, H, Tq]: how many centroids took each query
  assert (times >= 2).any(), "no query taken by two centroids: the mean is not exercised"
  if hp["num_clusters"] * (hp["window"] or length) < length:
    assert (times == 0).any(), "every query routed: the zero rows are not exercised"
  assert_module_matches(hp, variables, module, x, ctx, oracle)


def test_ops_xla_equals_reference_fwd_and_grad():
  """The gathered XLA form equals the dense per-centroid reference (T = 50, w = 9, C = 4)."""
  ks = jax.random.split(jax.random.key(3), 4)
  q, k, v = (jax.random.normal(kk, (2, 50, 2, 8)) for kk in ks[:3])
  cents = jax.random.normal(ks[3], (2, 4, 8))
  qi, ki = R.routing_select(q, cents, 9), R.routing_select(k, cents, 9)
  assert qi.shape == (2, 2, 4, 9)
  for causal in (False, True):
    def value_and_grad(impl):
      fn = lambda q, k, v: jnp.sum(jnp.sin(R.routing_attention(q, k, v, qi, ki, causal=causal, impl=impl)))  # noqa: E731
      return jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2)))(q, k, v)
    (fa, ga), (fb, gb) = value_and_grad("xla"), value_and_grad("reference")
    np.testing.assert_allclose(fa, fb, **FWD_TOL)
    for a, b in zip(ga, gb):
      np.testing.assert_allclose(a, b, **GRAD_TOL)
    np.testing.assert_allclose(R.routing_attention(q, k, v, qi, ki, causal=causal, impl="xla"),
                               R.routing_attention(q, k, v, qi, ki, causal=causal, impl="reference"), **FWD_TOL)
  with pytest.raises(ValueError, match="causal routing attention needs Tq == Tk"):
    R.routing_attention(q, k[:, :40], v[:, :40], qi, R.routing_select(k[:, :40], cents, 9), causal=True)


# ---- same-cluster share: 100% by construction, and the old rule fails it -----------------------


def _old_rank_window_mask(q, k, cents, window):
  """The canary: the pre-issue-10 rule. Sort queries and keys by nearest centroid (stable),
  cut into windows; query window i meets key window i."""
  q, k, cents = np.asarray(q), np.asarray(k), np.asarray(cents)
  cq = np.argmax(np.einsum("bthd,hcd->bhtc", q, cents), -1)
  ck = np.argmax(np.einsum("bthd,hcd->bhtc", k, cents), -1)
  n = -(-q.shape[1] // window)
  wk = -(-k.shape[1] // n)
  rank = lambda a: np.argsort(np.argsort(a, axis=-1, kind="stable"), axis=-1)  # noqa: E731
  return (rank(cq) // window)[..., :, None] == (rank(ck) // wk)[..., None, :]


def test_every_attended_pair_is_within_one_centroids_top_w():
  """C = 8, T = 1024, w = 64 (the issue's probe), queries and keys drawn from different
  distributions (shifted means, different scales): every pair the library's mask lets
  meet has both ends among one centroid's top-w (share 1.0); the old rank-window rule on
  the same inputs scores far below."""
  c, t, w, d = 8, 1024, 64, 16
  kq, kk, kc, ks = jax.random.split(jax.random.key(7), 4)
  shift = jax.random.normal(ks, (2, d))
  q = jax.random.normal(kq, (1, t, 1, d)) + 1.5 * shift[0]
  k = 0.5 * jax.random.normal(kk, (1, t, 1, d)) - 1.5 * shift[1]
  cents = R.normalize(jax.random.normal(kc, (1, c, d)))
  same = (topw_members(q, cents, w)[0, 0][:, :, None] & topw_members(k, cents, w)[0, 0][:, None, :]).any(0)

  def share(attended):
    return float((attended & same).sum() / attended.sum())

  mask = np.asarray(R.routing_mask(R.routing_select(q, cents, w), R.routing_select(k, cents, w), t, t))
  assert mask.shape == (1, 1, c, t, t)
  np.testing.assert_array_equal(mask[0, 0], routing_allowed(q, k, cents, cents, w, False)[0, 0])
  assert share(mask[0, 0].any(0)) == 1.0
  old = _old_rank_window_mask(q, k, cents, w)[0, 0]
  old_share = share(old)
  print(f"same-centroid share: routing 1.000, old rank-window rule {old_share:.3f}")
  assert old_share < 0.5, old_share


# ---- k-means, local heads, options --------------------------------------------------------------


@pytest.mark.parametrize("shared", [True, False])
def test_kmeans_ema_update(shared):
  """deterministic=False moves each centroid by eq. 8 (mean of the unit vectors assigned to
  it, decay 0.9, renormalised): from queries and keys (shared) or each set from its own."""
  hp = dict(num_heads=2, num_local_heads=1, num_clusters=3, window=4, kmeans_decay=0.9, shared_centroids=shared)
  x, _ = contract.make_inputs(length=16)
  module, variables, _ = contract.init_apply("routing", hp, x)
  km, p = variables["kmeans"], variables["params"]
  # deterministic=True (the default) leaves the centroids alone; training without a
  # mutable "kmeans" collection is an error, not a silent no-op.
  _, mut = module.apply(variables, x, mutable=["kmeans"])
  jax.tree.map(np.testing.assert_array_equal, mut["kmeans"], km)
  with pytest.raises(ValueError, match="mutable=\\['kmeans'\\]"):
    module.apply(variables, x, deterministic=False)
  _, mut = module.apply(variables, x, deterministic=False, mutable=["kmeans"])
  q, k = (np.asarray(heads(x, p, n))[:, :, :1] for n in ("query", "key"))  # routing head 0
  pairs = {"centroids": [q, k]} if shared else {"query_centroids": [q], "key_centroids": [k]}
  for name, vecs in pairs.items():
    c = np.asarray(km[name])
    pts = np.concatenate([v[:, :, 0].reshape(-1, c.shape[2]) for v in vecs])
    pts = pts / np.linalg.norm(pts, axis=-1, keepdims=True)
    assign = np.argmax(pts @ c[0].T, -1)
    expect = c.copy()
    for ci in range(c.shape[1]):
      if (assign == ci).any():
        m = 0.9 * c[0, ci] + 0.1 * pts[assign == ci].mean(0)
        expect[0, ci] = m / np.linalg.norm(m)
    new = np.asarray(mut["kmeans"][name])
    np.testing.assert_allclose(new, expect, atol=1e-5, err_msg=name)
    assert not np.allclose(new, c)


@pytest.mark.parametrize("causal", [True, False])
def test_all_local_heads_equal_sliding_window(causal):
  """num_local_heads = num_heads: the sliding_window variant (no positional encoding) with
  the same parameters; no centroids are created."""
  hp = dict(num_heads=2, num_local_heads=2, local_window=5, causal=causal)
  x, _ = contract.make_inputs(length=19)
  _, variables, y = contract.init_apply("routing", hp, x)
  assert "kmeans" not in variables
  y_ref = build("sliding_window", num_heads=2, window=5, positional="none", causal=causal).apply(variables, x)
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), atol=2e-5)


def test_routing_heads_depend_on_centroids_local_heads_do_not():
  """Head 0 routes, head 1 is local: new centroids change what head 0 writes and leave head 1's
  contribution unchanged (the other head's output rows zeroed in turn)."""
  hp = dict(num_heads=2, num_local_heads=1, num_clusters=3, window=8, local_window=4)
  x, _ = contract.make_inputs(length=40)
  _, variables, _ = contract.init_apply("routing", hp, x)
  module = build("routing", **hp)
  other = {"centroids": R.normalize(jax.random.normal(jax.random.key(9), variables["kmeans"]["centroids"].shape))}

  def output(head, kmeans):
    out = variables["params"]["out"]["kernel"]
    keep = {"params": {**variables["params"], "out": {"kernel": out * (jnp.arange(2) == head)[:, None, None]}}}
    return np.asarray(module.apply({**keep, "kmeans": kmeans}, x))

  assert not np.allclose(output(0, variables["kmeans"]), output(0, other), atol=1e-4)
  np.testing.assert_array_equal(output(1, variables["kmeans"]), output(1, other))


def test_default_split_and_config_errors():
  assert build("routing").cfg.local_heads == 2 and build("routing", num_heads=2).cfg.local_heads == 1
  for bad, match in ((dict(num_local_heads=5), "num_local_heads"), (dict(local_window=0), "local_window"),
                     (dict(num_clusters=0), "num_clusters"), (dict(share_qk=True, shared_centroids=False), "share_qk"),
                     (dict(window=-1), "window")):
    with pytest.raises(ValueError, match=match):
      build("routing", **bad)
  x, ctx = contract.make_inputs(length=8, context_len=12)
  for hp in (dict(causal=False), dict(causal=False, num_local_heads=0, share_qk=True)):
    with pytest.raises(ValueError, match="num_local_heads=0 and share_qk=False"):
      build("routing", num_heads=2, **hp).init(jax.random.key(0), x, context=ctx)
  module = build("routing", num_heads=2, num_clusters=3, window=4)
  variables = nn.unbox(module.init(jax.random.key(0), x))
  with pytest.raises(ValueError, match="including 'kmeans'"):
    module.apply({"params": variables["params"]}, x)


# ---- contract (moved from test_routed.py) --------------------------------------------------------

ROUTING_ONLY = dict(num_heads=2, num_local_heads=0, num_clusters=3, window=4)  # every declared pattern


def test_contract():
  contract.check_patterns("routing", ROUTING_ONLY)
  contract.check_grads_finite("routing", dict(num_heads=2, num_clusters=3, window=4, local_window=3))


def test_extra_mask_is_an_error():
  x, _ = contract.make_inputs(length=8)
  module, variables, _ = contract.init_apply("routing", ROUTING_ONLY, x)
  with pytest.raises(ValueError, match="extra mask"):
    module.apply(variables, x, mask=M.KeyPadding(jnp.ones((2, 8), bool)))
