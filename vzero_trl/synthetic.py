"""Moved to [`vzero_trl.toy.synthetic`]. This name stays only while `vzero_trl.mini` and code written on main against
the old path import it; delete it once they import `vzero_trl.toy.synthetic`."""

from .toy.synthetic import COLORS, SHAPES, draw_shape, make_dataset, make_example  # noqa: F401
