"""Moved to [`vzero_trl.toy.tiny`]. This name stays only while `vzero_trl.mini` and code written on main against
the old path import it; delete it once they import `vzero_trl.toy.tiny`."""

from .toy.tiny import TINY_STUDENT, TINY_TEACHER, build_tiny_pair, build_tiny_vlm, ensure_tiny_vlm  # noqa: F401
