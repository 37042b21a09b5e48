"""Argument checks used across the package, each written once.

Every check raises ValueError with a message that names the argument, the
value given and what to use instead. `where`, when given, prefixes the
message with the layer or function that refused the value.
"""

import numbers


def _prefix(where):
    return f"{where}: " if where else ""


def check_int(name, value, minimum=1, where=None):
    """Refuses anything but an integer (not a bool) of at least `minimum`.

    >>> check_int("classes", 0)
    Traceback (most recent call last):
    ValueError: `classes` must be a positive integer, got 0.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
    ):
        wanted = (
            "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        )
        raise ValueError(
            f"{_prefix(where)}`{name}` must be {wanted}, got {value!r}."
        )


def check_positive(name, value, where=None):
    """Refuses anything but a number > 0 (an int or a float)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not value > 0
    ):
        raise ValueError(
            f"{_prefix(where)}`{name}` must be positive, got {value!r}."
        )


def check_rate(name, value, where=None):
    """Refuses a dropout-like rate outside [0, 1)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(
            f"{_prefix(where)}`{name}` must be in [0, 1), got {value!r}."
        )


def check_patch_multiple(what, size, patch_size, whose="the"):
    """Refuses an image side that the patches do not tile, naming the
    nearest sides that they do.

    Args:
        what: the side as the caller knows it ("Input height", "--image_size").
        size: the side, in pixels.
        patch_size: the side of the square patches.
        whose: whose patch size it is ("MixerB16's"; default "the").

    >>> check_patch_multiple("image_size", 200, 16, "MixerB16's")
    Traceback (most recent call last):
    ValueError: image_size 200 is not a multiple of MixerB16's patch size 16: use 192 or 208.
    """
    if size % patch_size:
        below = size - size % patch_size
        choices = [str(s) for s in (below, below + patch_size) if s > 0]
        raise ValueError(
            f"{what} {size} is not a multiple of {whose} patch size "
            f"{patch_size}: use {' or '.join(choices)}."
        )
