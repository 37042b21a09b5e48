"""Argument checks used across the package, each written once.

Every check raises ValueError with a message that names the argument, the
value given and what to use instead. `where`, when given, prefixes the
message with the layer or function that refused the value.
"""

import dataclasses
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


def check_patch_multiple(what, size, patch_size, whose="the", unit="patch size"):
    """Refuses an image side that the patches do not tile, naming the
    nearest sides that they do.

    Args:
        what: the side as the caller knows it ("Input height", "--image_size").
        size: the side, in pixels.
        patch_size: the side of the square patches (or another step).
        whose: whose patch size it is ("MixerB16's"; default "the").
        unit: what the step is called ("patch size", "total stride").

    >>> check_patch_multiple("image_size", 200, 16, "MixerB16's")
    Traceback (most recent call last):
    ValueError: image_size 200 is not a multiple of MixerB16's patch size 16: use 192 or 208.
    """
    if size % patch_size:
        below = size - size % patch_size
        choices = [str(s) for s in (below, below + patch_size) if s > 0]
        raise ValueError(
            f"{what} {size} is not a multiple of {whose} {unit} "
            f"{patch_size}: use {' or '.join(choices)}."
        )


@dataclasses.dataclass(frozen=True)
class SizeRule:
    """The image sides a model takes: every multiple of `multiple` (a patch
    size or a total stride, called `unit`), or only `only` pixels, for the
    `reason` given. A builder checks its input shape with it; `train` and
    `benchmark` check an image size with a variant's rule before any work.

    >>> SizeRule(only=224, reason="its permute layers are sized by it").check(
    ...     "image_size", 256, "ViPS7's")
    Traceback (most recent call last):
    ValueError: image_size 256: ViPS7's input side must be 224 (its permute layers are sized by it). Resize or crop the images to 224x224.
    """

    multiple: int = 1
    unit: str = "patch size"
    only: int = None
    reason: str = ""

    def check(self, what, size, whose="the"):
        if self.only is None:
            check_patch_multiple(what, size, self.multiple, whose, self.unit)
        elif size != self.only:
            raise ValueError(
                f"{what} {size}: {whose} input side must be {self.only} "
                f"({self.reason}). Resize or crop the images to "
                f"{self.only}x{self.only}."
            )
