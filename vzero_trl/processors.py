"""Moved to [`vzero_trl.toy.processors`]. This name stays only while `vzero_trl.mini` and code written on main against
the old path import it; delete it once they import `vzero_trl.toy.processors`."""

from .toy.processors import Qwen3VLImageOnlyProcessor  # noqa: F401
