"""Moved to [`vzero_trl.toy.synthetic`]. This name stays only while `vzero_trl.mini` imports it (these names); delete
it once `vzero_trl.mini` imports `vzero_trl.toy.synthetic`."""

from .toy.synthetic import COLORS, SHAPES, draw_shape  # noqa: F401
