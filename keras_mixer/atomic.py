"""Files and folders written whole or not at all.

Everything keras_mixer writes (training records, models, exports) is written
under a temporary name in the destination's folder, flushed, checked where a
check applies, and only then renamed over the destination; a failure removes
the temporary and leaves what was there untouched. Temporary names start with
`.tmp-`, so a folder can be cleared of what a kill left (`remove_temporaries`).

Files get the modes an ordinary `cp` or `cp -r` gives: 0666 (folders 0777)
less the process umask, so 0644 / 0755 under the usual umask 022.
"""

import contextlib
import ctypes
import os
import shutil
import tempfile

import numpy as np

import keras

TMP_PREFIX = ".tmp-"


def umask():
    """The process umask (read without a window where it is changed, on
    Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def set_modes(path):
    """`cp -r` modes for a file or a whole tree: folders 0777, files 0666,
    less the umask."""
    mask = umask()
    if os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, files in os.walk(path):
            os.chmod(root, 0o777 & ~mask)
            for name in files:
                file = os.path.join(root, name)
                if not os.path.islink(file):
                    os.chmod(file, 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def temporary_name(path):
    """A fresh name beside `path` that keeps its suffix (Keras picks the
    format from it): `<folder>/.tmp-<pid>-<random>-<basename>`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=directory,
        prefix=f"{TMP_PREFIX}{os.getpid()}-",
        suffix=f"-{os.path.basename(path)}",
    )
    os.close(fd)
    os.remove(tmp)  # writers such as model.save want to create it
    return tmp


@contextlib.contextmanager
def writing(path, check=None):
    """Yields a temporary path to write `path`'s content to. When the block
    ends without error, the temporary is flushed to disk, `check(tmp)` runs
    (if given; it raises to refuse), modes are set and it is renamed to
    `path`. On any error the temporary is removed and `path` is untouched.

    >>> folder = tempfile.mkdtemp()
    >>> with writing(os.path.join(folder, "report.txt")) as tmp:
    ...     with open(tmp, "w") as f:
    ...         _ = f.write("done")
    >>> sorted(os.listdir(folder))
    ['report.txt']
    """
    tmp = temporary_name(path)
    try:
        yield tmp
        if not os.path.exists(tmp):
            raise OSError(f"Nothing was written for {path}.")
        _fsync_file(tmp)
        if check is not None:
            check(tmp)
        set_modes(tmp)
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(os.path.abspath(path)))
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_bytes(path, data, check=None):
    """Writes `data` to `path` atomically (see `writing`)."""
    with writing(path, check=check) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path, text, check=None):
    """Writes `text` (UTF-8) to `path` atomically (see `writing`)."""
    write_bytes(path, text.encode("utf-8"), check=check)


def _exchange(a, b):
    """Atomically swaps two paths (Linux renameat2 RENAME_EXCHANGE); returns
    False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b),
                       rename_exchange)
    return result == 0


@contextlib.contextmanager
def writing_folder(path, check=None):
    """Yields an empty temporary folder beside `path` to build `path`'s
    content in. When the block ends without error, `check(tmp)` runs (if
    given), modes are set as `cp -r` would, and the folder takes `path`'s
    place: an existing `path` is swapped out in one step where the system
    allows (Linux), else moved aside first, then removed. On any error the
    temporary folder is removed and `path` is untouched."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(
        dir=parent,
        prefix=f"{TMP_PREFIX}{os.getpid()}-",
        suffix=f"-{os.path.basename(os.path.normpath(path))}",
    )
    try:
        yield tmp
        if check is not None:
            check(tmp)
        set_modes(tmp)
        for root, _, files in os.walk(tmp):
            for name in files:
                _fsync_file(os.path.join(root, name))
        if os.path.lexists(path):
            if not _exchange(tmp, path):
                old = temporary_name(path)
                os.replace(path, old)
                os.replace(tmp, path)
                tmp = old
            # tmp now holds the previous content.
        else:
            os.replace(tmp, path)
        _fsync_dir(parent)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(name):
    """Whether the process that named a temporary `.tmp-<pid>-...` runs."""
    try:
        pid = int(name[len(TMP_PREFIX):].split("-", 1)[0])
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_temporaries(directory, stale_only=False):
    """Removes what a killed write left in `directory` (`.tmp-*` entries);
    with `stale_only`, only those of processes that no longer run (a folder
    other processes write to at the same time, such as a download cache)."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if name.startswith(TMP_PREFIX) and not (stale_only and _alive(name)):
            full = os.path.join(directory, name)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                os.remove(full)


def save_model(model, path, check=False):
    """`model.save` (`.keras`) or `model.save_weights` (`.weights.h5`) to
    `path` atomically. With `check`, the written file is loaded back (safe
    mode) and must hold the model's weights exactly before it is renamed."""

    def reload(tmp):
        if tmp.endswith(".weights.h5"):
            copy = keras.models.clone_model(model)
            copy.load_weights(tmp)
        else:
            copy = keras.saving.load_model(tmp)
        if len(copy.weights) != len(model.weights):
            raise RuntimeError(
                f"{path}: the written file holds {len(copy.weights)} weights, "
                f"the model {len(model.weights)}; it was not saved."
            )
        for saved, original in zip(copy.weights, model.weights):
            if not np.array_equal(np.asarray(saved), np.asarray(original)):
                raise RuntimeError(
                    f"{path}: weight {original.path!r} reads back different "
                    "from the model; it was not saved."
                )

    with writing(path, check=reload if check else None) as tmp:
        if path.endswith(".weights.h5"):
            model.save_weights(tmp)
        else:
            model.save(tmp)
