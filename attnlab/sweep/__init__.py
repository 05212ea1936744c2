"""Sweeps: a grid of config overrides, each point a resumable training run (`attnlab sweep`)."""

from attnlab.sweep.cli import main, register_cli
from attnlab.sweep.grid import grid, parse_axis, point_config, point_name, point_overrides
from attnlab.sweep.local import RESULT_COLUMNS, run_local, run_sweep
from attnlab.sweep.point import check_point, config_hash, inspect_point, run_point, run_point_attempts
from attnlab.sweep.summary import summarize, summary_markdown

__all__ = ["RESULT_COLUMNS", "check_point", "config_hash", "grid", "inspect_point", "main", "parse_axis",
           "point_config", "point_name", "point_overrides", "register_cli", "run_local", "run_point",
           "run_point_attempts", "run_sweep", "summarize", "summary_markdown"]
