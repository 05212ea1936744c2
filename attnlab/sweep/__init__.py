"""Sweeps: a grid of config overrides, each point a resumable training run (`attnlab sweep`)."""

from attnlab.sweep.cli import main, register_cli
from attnlab.sweep.grid import grid, parse_axis, point_config, point_name, point_overrides
from attnlab.sweep.local import check_point, run_point, run_sweep

__all__ = ["check_point", "grid", "main", "parse_axis", "point_config", "point_name", "point_overrides", "register_cli",
           "run_point", "run_sweep"]
