"""Moved to [`vzero_trl.toy.tiny`]. This name stays only while `vzero_trl.mini` imports it (these names); delete
it once `vzero_trl.mini` imports `vzero_trl.toy.tiny`."""

from .toy.tiny import build_tiny_vlm  # noqa: F401
