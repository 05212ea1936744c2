"""The same run on 1 device and on 8 host devices (data x tensor, data x fsdp) agrees.

Also checks that parameters really are split over the `tensor` and `fsdp` axes.
"""

import numpy as np

from attnlab.train.metrics import read_metrics
from tests.train import subproc

TRAIN = dict(steps=4, log_every=1, eval_every=4, checkpoint_every=4, batch_size=8)
RTOL = 1e-5


def _losses(workdir):
  """[(step, key, value)] of every train/eval loss and accuracy logged in `workdir`."""
  return [(r["step"], k, r[k]) for r in read_metrics(workdir) for k in sorted(r)
          if k.endswith(("/loss", "/accuracy"))]


def test_meshes_match_single_device_and_shard_params(tmp_path):
  single = dict(workdir=str(tmp_path / "one"), train=TRAIN, mesh=dict(data=-1, fsdp=1, tensor=1))
  meshes = {
      "data4_tensor2": dict(data=4, fsdp=1, tensor=2),
      "data2_fsdp4": dict(data=2, fsdp=4, tensor=1),
  }
  runs = [dict(workdir=str(tmp_path / name), train=TRAIN, mesh=mesh, report_specs=True)
          for name, mesh in meshes.items()]
  proc_one = subproc.start([single], devices=1)
  proc_eight = subproc.start(runs, devices=8)
  rc, (res_one,), err = subproc.finish(proc_one)
  assert rc == 0, err[-3000:]
  rc, results, err = subproc.finish(proc_eight)
  assert rc == 0, err[-3000:]
  assert res_one["devices"] == 1 and all(r["devices"] == 8 for r in results)

  want = _losses(single["workdir"])
  assert len(want) == 4 * 2 + 2  # 4 logged train steps and one eval, loss + accuracy each
  for run in runs:
    got = _losses(run["workdir"])
    assert [g[:2] for g in got] == [w[:2] for w in want]
    loss_pairs = np.array([(g[2], w[2]) for g, w in zip(got, want) if g[1].endswith("loss")])
    rel = np.abs(loss_pairs[:, 0] - loss_pairs[:, 1]) / np.abs(loss_pairs[:, 1])
    print(f"{run['workdir']}: max relative loss difference vs 1 device = {rel.max():.3g}")
    assert rel.max() < RTOL, (run["workdir"], rel.max())

  tensor_specs, fsdp_specs = results[0], results[1]
  for specs in (tensor_specs["specs"], tensor_specs["array_specs"]):
    assert specs["['q']"] == ["fsdp", "tensor", None]
    assert specs["['up']"] == ["fsdp", "tensor"]
  # q is [embed=16, heads=2, head_dim=8]: split 2 ways on tensor, or 4 ways on fsdp.
  assert tensor_specs["shard_shapes"]["['q']"] == [16, 1, 8]
  assert fsdp_specs["shard_shapes"]["['q']"] == [4, 2, 8]
  assert fsdp_specs["shard_shapes"]["['embed']"] == [16, 4]  # [vocab, embed/fsdp]
