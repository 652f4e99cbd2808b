"""Grids of runs (plans), the resumable shardable runner (sweep) and the report against the paper."""

from .plans import PLANS, Cell, Plan, Stage, expand, get_plan, load_plan_file, with_options

__all__ = ["PLANS", "Cell", "Plan", "Stage", "expand", "get_plan", "load_plan_file", "with_options"]
