"""Numeric options checked where they enter: a finite number in its range, or an error naming the option and value.

A range written as `x <= 0` lets NaN through (every comparison with NaN is false), and NaN then spreads silently: a NaN
gain switches the gate off, a NaN clip makes every loss NaN. [`check_range`] states what a value must be and tests
exactly that, so NaN, infinities and wrong types fail every range. The configuration classes (`VZeroConfig`,
`PrepareConfig`, `EvaluateConfig`) and the launcher's arguments call it from `__post_init__`.
"""

import math


def check_range(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = False,
    open_high: bool = False,
    integer: bool = False,
    optional: bool = False,
    fix: str = "",
) -> None:
    """
    Raise `ValueError` unless `value` is a finite number (an `int` when `integer`) within the bounds.

    Args:
        name (`str`):
            The option, as the user writes it in a recipe or on the command line.
        value (`object`):
            Its value.
        low (`float`, *optional*), high (`float`, *optional*):
            Bounds, inclusive unless `open_low` / `open_high`; `None` leaves that side open.
        integer (`bool`, *optional*, defaults to `False`):
            Whether the option counts something (rows, tokens, steps), so that `2.5` is wrong too.
        optional (`bool`, *optional*, defaults to `False`):
            Whether `None` (unset) is accepted.
        fix (`str`, *optional*):
            What to set instead, appended to the message.
    """
    if value is None and optional:
        return
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    whole = isinstance(value, int) and not isinstance(value, bool)
    inside = (
        number
        and (not integer or whole)
        and (low is None or (value > low if open_low else value >= low))
        and (high is None or (value < high if open_high else value <= high))
    )
    if inside:
        return
    if low is not None and high is not None:
        interval = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    elif low is not None:
        interval = f"{'>' if open_low else '>='} {low:g}"
    else:
        interval = f"{'<' if open_high else '<='} {high:g}"
    need = (
        " (a finite number is needed)"
        if not number
        else " (a whole number is needed)"
        if integer and not whole
        else ""
    )
    raise ValueError(f"`{name}` must be {interval}, got {value!r}{need}." + (f" {fix}" if fix else ""))
