"""Moved to [`vzero_trl.toy.processors`]. This name stays only while `vzero_trl.mini` imports it (these names); delete
it once `vzero_trl.mini` imports `vzero_trl.toy.processors`."""

from .toy.processors import Qwen3VLImageOnlyProcessor  # noqa: F401
