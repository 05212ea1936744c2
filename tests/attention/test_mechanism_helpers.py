"""The helpers that define a mechanism, tested against their papers' definitions.

The module-level oracles (test_sparse_static.py, test_linear.py) take these helpers'
random decisions as data, read through the modules' public accessors
(`BigBirdAttention.random_blocks`, `variants.linear.performer_projection`); the
decisions themselves are checked here:

* BigBird's random key blocks (Zaheer et al., 2020, Sec. 2 and App. D, BigBird-ITC):
  r distinct key blocks per query block and head, drawn uniformly among the blocks the
  window and the global blocks do not already cover; none for global query blocks;
  reproducible from the seed, different per head (per layer: test_layer_aware.py).
* Performer's orthogonal random features (Choromanski et al., 2021, FAVOR+, Sec. 2.4,
  Lemma 1): every block of d rows orthogonal, row norms chi(d), every row marginally
  N(0, I), so the positive random-feature estimate of exp(x . y) is unbiased.
* S2-Attention's shards (Lin et al., 2024; the DKernel / Phi-3-small pattern): head h
  sees the key blocks j with (j + h * max(1, v // H) + 1) % v == 0, and the heads'
  shards together with the local window cover every earlier position.
* Reformer's angular LSH (Kitaev et al., 2020, Sec. 2): Gaussian rotations, buckets used
  about equally, collisions more frequent at smaller angles (lsh's oracle in
  test_routed.py reads the module's sown rotations as data).

Each property check has a canary: a table, projection or pattern with the slip it
guards against, which the same check rejects.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from attnlab.attention import build
from attnlab.attention.ops.linear.feature_maps import orthogonal_random_features
from attnlab.attention.ops.sparse.routed import lsh_hash, lsh_rotations
from attnlab.attention.ops.sparse.static import bigbird_random_blocks

# ---- BigBird random blocks ------------------------------------------------------------------


def bigbird_candidates(i, nb, left, right, ng, causal):
  """Key blocks query block i may draw at random (BigBird-ITC): not global (j >= ng), not
  in i's window i - left .. i + right, and earlier than the window when causal."""
  return [j for j in range(nb) if j >= ng and not (i - left <= j <= i + right) and (j < i or not causal)]


def bigbird_violations(table, r, left, right, ng, causal):
  """The ways `table` (int [H, nb, r], -1 = none) breaks the definition; [] if none."""
  out = []
  nh, nb, width = table.shape
  if width != r:
    return [f"width {width} != r {r}"]
  for h in range(nh):
    for i in range(nb):
      row = table[h, i]
      chosen = row[row >= 0].tolist()
      if i < ng:
        if chosen:
          out.append(f"global query block {i} (head {h}) drew {chosen}")
        continue
      cand = set(bigbird_candidates(i, nb, left, right, ng, causal))
      if len(set(chosen)) != len(chosen):
        out.append(f"head {h} block {i}: repeated blocks {chosen}")
      if not set(chosen) <= cand:
        out.append(f"head {h} block {i}: {sorted(set(chosen) - cand)} are window, global, future or out of range")
      if len(chosen) != min(r, len(cand)):
        out.append(f"head {h} block {i}: {len(chosen)} blocks, expected min(r, {len(cand)})")
  return out


def heads_draw_their_own(table, r, ext, ng, causal):
  """No two heads share their draws over the query blocks that have a choice (> r candidates)."""
  nb = table.shape[1]
  free = [i for i in range(ng, nb) if len(bigbird_candidates(i, nb, *ext, ng, causal)) > r]
  return bool(free) and all(not np.array_equal(table[a, free], table[b, free])
                            for a in range(len(table)) for b in range(a))


BB = [  # (num_blocks, r, window extents (left, right), num_global, causal)
    (16, 3, (1, 1), 1, False),  # BigBird's 3-block window, one global block
    (12, 2, (2, 2), 2, False),
    (20, 2, (1, 0), 1, True),
    (9, 4, (2, 0), 1, True),  # early query blocks have fewer than r candidates: padded with -1
]


@pytest.mark.parametrize("nb,r,ext,ng,causal", BB)
def test_bigbird_random_blocks_follow_the_definition(nb, r, ext, ng, causal):
  """Count, placement, seeded reproducibility and per-head independence of
  `bigbird_random_blocks` (the window extents are symmetric when non-causal, so the
  helper's `window` is the left extent)."""
  table = bigbird_random_blocks(3, 4, nb, nb, r, ext[0], ng, causal)
  assert bigbird_violations(table, r, *ext, ng, causal) == []
  np.testing.assert_array_equal(table, bigbird_random_blocks(3, 4, nb, nb, r, ext[0], ng, causal))
  assert not np.array_equal(table, bigbird_random_blocks(4, 4, nb, nb, r, ext[0], ng, causal)), "seed ignored"
  assert heads_draw_their_own(table, r, ext, ng, causal), "every head draws its own blocks"
  if causal:  # a block's draw does not depend on the length (decode sees the full pass's blocks)
    longer = bigbird_random_blocks(3, 4, nb + 7, nb + 7, r, ext[0], ng, causal)
    np.testing.assert_array_equal(table, longer[:, :nb])


def test_bigbird_random_blocks_are_uniform_among_candidates():
  """Sampling without replacement, uniformly: over 3000 independent draws (heads) every
  candidate block of a query block is chosen with frequency r / #candidates (chi-square)."""
  nb, r, i = 16, 3, 9
  table = bigbird_random_blocks(0, 3000, nb, nb, r, 1, 1, False)
  cand = bigbird_candidates(i, nb, 1, 1, 1, False)
  counts = np.array([(table[:, i] == j).sum() for j in cand])
  p = scipy.stats.chisquare(counts).pvalue
  print(f"chosen counts over {len(cand)} candidates: {counts.tolist()}, p = {p:.3f}")
  assert counts.sum() == 3000 * r and p > 1e-3, (counts, p)
  # Canary: a draw biased towards the nearest candidates fails the same check.
  biased = np.concatenate([np.repeat(cand[:r], 1500), np.repeat(cand[-r:], 1500)])
  assert scipy.stats.chisquare(np.array([(biased == j).sum() for j in cand])).pvalue < 1e-6


def test_bigbird_violations_catch_the_slips():
  """Canaries for the definition check: each corrupted table is rejected."""
  nb, r, ext, ng = 16, 3, (1, 1), 1
  good = bigbird_random_blocks(0, 2, nb, nb, r, ext[0], ng, False)
  slips = {"a window block": (0, 5, 0, 6), "a global block": (1, 7, 1, 0), "a repeat": (0, 8, 1, int(good[0, 8, 0])),
           "out of range": (1, 9, 2, nb), "a dropped block": (0, 10, 0, -1), "a global query row": (1, 0, 0, 5)}
  for what, (h, i, s, j) in slips.items():
    bad = good.copy()
    bad[h, i, s] = j
    assert bigbird_violations(bad, r, *ext, ng, False), what
  assert heads_draw_their_own(good, r, ext, ng, False)
  assert not heads_draw_their_own(np.broadcast_to(good[:1], good.shape), r, ext, ng, False), "one table for all heads"


def test_bigbird_module_table_follows_the_definition():
  """The table the module attends with (its public accessor) obeys the definition under
  the module's own window convention, at layer 0 and at a later layer."""
  for layer in (0, 2):
    m = build("bigbird", num_heads=3, block_size=4, window_blocks=3, num_global_blocks=1, num_random_blocks=2,
              causal=False, seed=5, layer_index=layer, num_layers=3)
    table = np.asarray(m.random_blocks(np.arange(3), 61))  # 16 blocks, the last one partial
    assert table.shape == (3, 16, 2)
    assert bigbird_violations(table, 2, 1, 1, 1, False) == []


# ---- Performer orthogonal random features -------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(1, 2))
def _qr_without_sign_fix(key, m, d):
  """Canary: orthogonal rows from a plain QR (no Haar sign correction), chi norms. -> [m, d]"""
  kq, kn = jax.random.split(key)
  q, _ = jnp.linalg.qr(jax.random.normal(kq, (m // d, d, d)))
  norms = jnp.linalg.norm(jax.random.normal(kn, (m, d)), axis=-1)
  return jnp.swapaxes(q, -1, -2).reshape(m, d) * norms[:, None]


D, DRAWS = 8, 4096
_ROT = np.linalg.qr(np.random.default_rng(0).normal(size=(D, D)))[0]
_X, _Y = 0.7 * _ROT[0], 0.7 * (0.612 * _ROT[0] + 0.791 * _ROT[1])  # |x| = |y| = 0.7, x . y = 0.3


@pytest.fixture(scope="module")
def many_draws():
  """DRAWS independent projections W_n [D, D] (one block each) in one call: the helper
  draws every block of D rows independently (its own QR and its own norms)."""
  draw = jax.jit(orthogonal_random_features, static_argnums=(1, 2))
  return np.asarray(draw(jax.random.key(1), DRAWS * D, D)).reshape(DRAWS, D, D)


def block_orthogonality_error(w):
  """max over blocks w [N, D, D] of |cos(w_r, w_s)|, r != s rows of the same block."""
  u = w / np.linalg.norm(w, axis=-1, keepdims=True)
  return float(np.abs(u @ np.swapaxes(u, -1, -2) - np.eye(w.shape[-1])).max())


def test_orthogonal_features_blocks_are_orthogonal(many_draws):
  err = block_orthogonality_error(many_draws)
  iid = block_orthogonality_error(np.random.default_rng(0).normal(size=(64, D, D)))
  print(f"max |cos| inside a block of {D} rows, over {DRAWS} blocks: {err:.1e} (iid Gaussian rows: {iid:.2f})")
  assert err < 1e-5 and iid > 0.1


def _sphere(w):
  """Canary: directions kept, every norm set to sqrt(D) (the 'regularised' features)."""
  return w / np.linalg.norm(w, axis=-1, keepdims=True) * np.sqrt(D)


def test_orthogonal_features_norms_are_chi(many_draws):
  """Row norms ~ chi(D) (KS test) and E|w|^2 = D; rows marginally N(0, I): mean 0."""
  norms = np.linalg.norm(many_draws, axis=-1).ravel()
  p = scipy.stats.kstest(norms, "chi", args=(D,)).pvalue
  mean_sq = float(np.mean(norms ** 2))
  row_mean = np.abs(many_draws.mean(0)).max()  # [D, D]: the mean of row r over draws
  print(f"KS p = {p:.3f}, E|w|^2 = {mean_sq:.3f} (D = {D}), max |E w_r| = {row_mean:.3f}")
  assert p > 1e-3 and abs(mean_sq - D) < 4 * np.sqrt(2 * D / norms.size)
  assert row_mean < 4 / np.sqrt(DRAWS)
  # Canaries: constant norms fail the KS test; a QR without the Haar sign fix has rows
  # with a non-zero mean (the pivot entry's sign is fixed by the factorisation).
  assert scipy.stats.kstest(np.linalg.norm(_sphere(many_draws), axis=-1).ravel(), "chi", args=(D,)).pvalue < 1e-6
  unfixed = np.asarray(_qr_without_sign_fix(jax.random.key(1), 512 * D, D)).reshape(512, D, D)
  assert np.abs(unfixed.mean(0)).max() > 0.3


def favor_estimate(w, x, y):
  """Positive random-feature estimate of exp(x . y), one per projection: mean over its
  rows of exp(w_r . x - |x|^2 / 2) exp(w_r . y - |y|^2 / 2) (FAVOR+, Lemma 1). w [N, M, D]."""
  return np.mean(np.exp(w @ x - x @ x / 2) * np.exp(w @ y - y @ y / 2), axis=-1)


def test_softmax_kernel_estimate_is_unbiased(many_draws):
  """Averaged over many draws the estimate converges to exp(x . y): the error of the mean
  over all DRAWS is within 3% and >= 4x smaller than the error of 64-draw means."""
  true = np.exp(_X @ _Y)

  def errors(w):
    e = favor_estimate(w, _X, _Y)
    groups = e.reshape(-1, 64).mean(-1)
    return abs(e.mean() - true) / true, float(np.sqrt(np.mean((groups - true) ** 2)) / true)

  grand, per64 = errors(many_draws)
  canary, _ = errors(_sphere(many_draws))
  print(f"relative error: mean of {DRAWS} draws {grand:.4f}, 64-draw means (rms) {per64:.4f}; "
        f"constant-norm canary {canary:.4f}")
  assert grand < 0.03 and grand < per64 / 4, (grand, per64)
  assert canary > 0.03, canary  # a biased estimator does not converge to exp(x . y)


# ---- S2-Attention shards ---------------------------------------------------------------------


def s2_shard(h, nh, v, nb):
  """Head h's shard (DKernel / Phi-3-small, Lin et al., 2024): key blocks j with
  (j + h * max(1, v // nh) + 1) % v == 0."""
  return {j for j in range(nb) if (j + h * max(1, v // nh) + 1) % v == 0}


@pytest.mark.parametrize("nh,vert_stride,homo", [(4, 0, False), (4, 2, False), (2, 0, False), (4, 0, True)])
def test_s2_shards_follow_the_formula_and_cover_the_context(nh, vert_stride, homo):
  """Head h's non-local keys are exactly its shard, and (heterogeneous heads, v <= H)
  every earlier position is seen by some head. The homo_head canary (every head on shard 0)
  leaves positions that no head sees."""
  b, nl, t = 2, 1, 41  # 21 blocks, the last one partial
  m = build("s2_attention", num_heads=nh, block_size=b, local_blocks=nl, vert_stride=vert_stride,
            homo_head=homo, causal=True)
  v = vert_stride or nh
  qp, kp = np.arange(t)[:, None], np.arange(t)[None, :]
  got = np.asarray(m.allowed(np.arange(nh), t)(jnp.asarray(qp)[None, None], jnp.asarray(kp)[None, None]))[:, 0]
  got = np.broadcast_to(got, (nh, t, t))
  local = (kp // b <= qp // b) & (qp // b - kp // b < nl)
  for h in range(nh):
    shard = np.isin(kp // b, sorted(s2_shard(0 if homo else h, nh, v, -(-t // b))))
    np.testing.assert_array_equal(got[h], (local | shard) & (kp <= qp), err_msg=f"head {h}")
  covered = got.any(0)
  if homo:
    assert not covered[np.tril_indices(t)].all(), "one shared shard cannot cover the context"
  else:
    assert covered[np.tril_indices(t)].all(), "the heads' shards must cover every earlier key"


# ---- Reformer's angular LSH --------------------------------------------------------------------


def test_lsh_rotations_hash_by_angle():
  """Angular LSH (Kitaev et al., 2020, Sec. 2; Andoni et al., 2015): with R Gaussian,
  h(x) = argmax([xR; -xR]) puts random directions in every bucket about equally often, and two
  vectors collide more often the smaller their angle. Checked over 256 independent
  rotations (heads x rounds) from `lsh_rotations`, with `lsh_hash` as the hash; canary:
  hashing the second vector under other rotations loses the locality."""
  d, nb = 16, 8
  rot = np.asarray(lsh_rotations(0, 64, 4, d, nb))  # [H, R, D, nb/2]
  assert rot.shape == (64, 4, d, nb // 2)
  assert scipy.stats.kstest(rot.ravel(), "norm").pvalue > 1e-3
  assert not np.allclose(rot[:, 0], rot[:, 1]), "every round draws its own rotation"
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 512, 1, d))
  buckets = np.asarray(lsh_hash(jnp.asarray(np.broadcast_to(x, (1, 512, 64, d)), jnp.float32), rot))  # [1, H, R, T]
  counts = np.bincount(buckets.ravel(), minlength=nb)
  # (Not a multinomial: the same 512 points under each rotation; every bucket within 6%.)
  assert np.abs(counts / counts.mean() - 1).max() < 0.06, counts
  u = x[0, :, 0] / np.linalg.norm(x[0, :, 0], axis=-1, keepdims=True)
  w = rng.normal(size=u.shape)
  w -= np.sum(w * u, -1, keepdims=True) * u
  w /= np.linalg.norm(w, axis=-1, keepdims=True)

  def hashes(points, rotations):  # points [T, D] under every (head, round) rotation -> [H, R, T]
    return np.asarray(lsh_hash(jnp.asarray(np.broadcast_to(points[None, :, None], (1, len(points), 64, d)),
                                           jnp.float32), jnp.asarray(rotations)))[0]

  def collision_rates(rot_y):
    hx = hashes(u, rot)
    return [float((hx == hashes(np.cos(a) * u + np.sin(a) * w, rot_y)).mean()) for a in (0.2, 0.8, 1.6)]

  def local(rate):
    return rate[0] > rate[1] + 0.1 > rate[2] + 0.2

  rate = collision_rates(rot)
  print(f"collision rate at angles 0.2 / 0.8 / 1.6 rad: {rate}; bucket counts {counts.tolist()}")
  assert local(rate), rate
  # Canary: y hashed under other rotations than x (no shared hash): no locality left.
  other = collision_rates(np.asarray(lsh_rotations(1, 64, 4, d, nb)))
  assert not local(other), other
