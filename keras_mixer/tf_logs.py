"""TensorFlow's C++ start-up logs, kept off the terminal unless asked for.

TensorFlow prints INFO lines while it is imported (oneDNN, CUDA stubs, CPU
features) and, on a machine without a GPU, an error line when its devices
start ("failed call to cuInit"). `TF_CPP_MIN_LOG_LEVEL` cannot silence the
import-time lines: Abseil writes them before TensorFlow reads the variable
(its "All log messages before absl::InitializeLog() is called are written to
STDERR"). So unless the user has set `TF_CPP_MIN_LOG_LEVEL` (then nothing
here applies and every line shows), keras_mixer:

- sets `TF_CPP_MIN_LOG_LEVEL=2` (C++ INFO and WARNING off) before TensorFlow
  loads (`default_level`);
- runs TensorFlow's import, and the CLI its device start, with file
  descriptor 2 sent to a temporary file, then writes back every captured
  line except those start-up lines (`quiet_startup`, `NOISE`). If the
  block raises, every line is written back.
"""

import os
import re
import sys
import tempfile

# Whether the user chose TensorFlow's C++ log level (read once, at import).
USER_SET = "TF_CPP_MIN_LOG_LEVEL" in os.environ
DEFAULT_LEVEL = "2"
# The start-up lines dropped: C++ INFO/WARNING lines (level 2 hides them once
# TensorFlow has read it), Abseil's preamble, the CPU-features line's second
# half, and cuInit's failure on a machine without a GPU.
_STAMP = r"\d{4} \d\d:\d\d:\d+\.\d+ +\d+ "  # also absl's "00:00:<epoch seconds>"
NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are "
    r"written to STDERR"
    rf"|[IW]{_STAMP}\S+:\d+\] .*"
    r"|To enable the following instructions: .*rebuild TensorFlow with the "
    r"appropriate compiler flags\."
    rf"|E{_STAMP}cuda_platform\.cc:\d+\] failed call to cuInit: .*"
)


def default_level():
    """`TF_CPP_MIN_LOG_LEVEL=2` unless the user set it."""
    if not USER_SET:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_LEVEL)


class quiet_startup:
    """Context manager: stderr (file descriptor 2) of the block, less the
    `NOISE` lines, written back at its end. Does nothing when the user set
    `TF_CPP_MIN_LOG_LEVEL` or descriptor 2 is closed."""

    def __enter__(self):
        self._saved = None
        if USER_SET:
            return self
        try:
            self._saved = os.dup(2)
        except OSError:
            return self
        _flush()
        self._capture = tempfile.TemporaryFile()
        os.dup2(self._capture.fileno(), 2)
        return self

    def __exit__(self, kind, value, traceback):
        if self._saved is None:
            return False
        _flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        with self._capture:
            self._capture.seek(0)
            text = self._capture.read().decode("utf-8", "replace")
        lines = text.splitlines(keepends=True)
        if kind is None:
            lines = [line for line in lines
                     if not NOISE.fullmatch(line.rstrip("\r\n"))]
        if lines:
            os.write(2, "".join(lines).encode("utf-8"))
        return False


def _flush():
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
