"""Mesh shapes, logical rules and the shardability check (no compilation)."""

import ml_collections
import pytest
from jax.sharding import AbstractMesh, AxisType, NamedSharding, PartitionSpec as P
import jax

from attnlab.train import DEFAULT_RULES, logical_rules, make_mesh, mesh_shape
from attnlab.train.sharding import fit_shardings


def _mesh(**kw):
  return ml_collections.ConfigDict(kw)


def test_mesh_shape_fills_minus_one():
  assert mesh_shape(_mesh(data=-1, fsdp=1, tensor=1), 8) == (8, 1, 1)
  assert mesh_shape(_mesh(data=-1, fsdp=2, tensor=2), 8) == (2, 2, 2)
  assert mesh_shape(_mesh(data=2, fsdp=-1, tensor=1), 8) == (2, 4, 1)
  assert mesh_shape(_mesh(), 4) == (4, 1, 1)  # defaults: data=-1, fsdp=1, tensor=1


@pytest.mark.parametrize("mesh, match", [
    (dict(data=4, fsdp=1, tensor=1), "data\\*fsdp\\*tensor = 4 .* 8 devices"),
    (dict(data=-1, fsdp=3, tensor=1), "not divisible by 3"),
    (dict(data=-1, fsdp=-1, tensor=1), "at most one -1"),
    (dict(data=0, fsdp=1, tensor=1), "positive"),
])
def test_mesh_shape_errors_are_one_line(mesh, match):
  with pytest.raises(ValueError, match=match) as info:
    mesh_shape(_mesh(**mesh), 8)
  assert "\n" not in str(info.value)


def test_make_mesh_is_auto_with_fixed_axis_order():
  mesh = make_mesh(_mesh(data=-1, fsdp=1, tensor=1))
  assert mesh.axis_names == ("data", "fsdp", "tensor")
  assert all(t == AxisType.Auto for t in mesh.axis_types)
  assert mesh.size == jax.device_count()


def test_logical_rules_default_and_override():
  c = ml_collections.ConfigDict({"mesh": {"data": -1, "fsdp": 1, "tensor": 1}})
  assert logical_rules(c) == DEFAULT_RULES
  assert dict(DEFAULT_RULES)["batch"] == ("data", "fsdp")
  c.mesh.rules = [["batch", ["data"]], ["vocab", None], ["embed", "fsdp"]]
  assert logical_rules(c) == (("batch", ("data",)), ("vocab", None), ("embed", "fsdp"))
  c.mesh.rules = [["batch"]]
  with pytest.raises(ValueError, match="config.mesh.rules"):
    logical_rules(c)


def test_fit_shardings_replicates_indivisible_dims_and_says_so():
  mesh = AbstractMesh((1, 1, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
  abstract = {"k": jax.ShapeDtypeStruct((16, 1, 8), "float32"),
              "q": jax.ShapeDtypeStruct((16, 4, 8), "float32")}
  shardings = {"k": NamedSharding(mesh, P(None, "tensor", None)),
               "q": NamedSharding(mesh, P(None, "tensor", None))}
  logical = {"k": P("embed", "kv_heads", "head_dim"), "q": P("embed", "heads", "head_dim")}
  fitted, notes = fit_shardings(abstract, shardings, logical)
  assert fitted["q"].spec == P(None, "tensor", None)
  assert fitted["k"].spec == P(None, None, None)
  (note,) = notes
  assert "['k']" in note and "'kv_heads'" in note and "1 is not divisible" in note


def test_initialize_distributed_is_a_no_op_without_a_launcher_and_checks_its_env(monkeypatch):
  from attnlab.train import initialize_distributed
  for name in ("JAX_COORDINATOR_ADDRESS", "ATTNLAB_MULTIHOST", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  assert initialize_distributed() is False
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  with pytest.raises(ValueError, match="set both JAX_NUM_PROCESSES and JAX_PROCESS_ID") as info:
    initialize_distributed()
  assert "\n" not in str(info.value)
