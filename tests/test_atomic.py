"""keras_mixer.atomic: a write lands whole after its check, or not at all,
with the modes `cp -r` gives under the umask."""

import os

import pytest

from keras_mixer import atomic


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _refuse(path):
    raise RuntimeError("check failed")


def test_file_lands_after_its_check_or_not_at_all(tmp_path, umask_027):
    target = tmp_path / "out.bin"
    atomic.write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    assert target.stat().st_mode & 0o777 == 0o640
    with pytest.raises(RuntimeError, match="check failed"):
        atomic.write_bytes(target, b"second", check=_refuse)
    with pytest.raises(ZeroDivisionError):
        with atomic.writing(target) as tmp:
            open(tmp, "wb").write(b"third")
            1 / 0
    assert target.read_bytes() == b"first"
    checked = []
    atomic.write_text(target, "fourth",
                      check=lambda tmp: checked.append(open(tmp).read()))
    assert checked == ["fourth"] and target.read_text() == "fourth"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_folder_replaces_the_previous_one_only_when_checked(tmp_path, umask_027):
    target = tmp_path / "export" / "1"
    with atomic.writing_folder(target) as tmp:
        os.makedirs(os.path.join(tmp, "variables"))
        open(os.path.join(tmp, "variables", "data"), "w").write("v1")
    assert (target / "variables" / "data").read_text() == "v1"
    modes = {p.stat().st_mode & 0o777 for p in (target, target / "variables")}
    assert modes == {0o750}
    assert (target / "variables" / "data").stat().st_mode & 0o777 == 0o640
    with pytest.raises(RuntimeError):
        with atomic.writing_folder(target, check=_refuse) as tmp:
            open(os.path.join(tmp, "data"), "w").write("v2")
    assert (target / "variables" / "data").read_text() == "v1"
    with atomic.writing_folder(target) as tmp:
        open(os.path.join(tmp, "data"), "w").write("v3")
    assert os.listdir(target) == ["data"] and (target / "data").read_text() == "v3"
    assert os.listdir(tmp_path / "export") == ["1"]


def test_only_stale_temporaries_are_cleared_from_a_shared_folder(tmp_path):
    mine = tmp_path / f".tmp-{os.getpid()}-abc-file.npz"
    dead = tmp_path / ".tmp-999999999-abc-file.npz"
    other = tmp_path / "file.npz"
    for path in (mine, dead, other):
        path.write_bytes(b"x")
    atomic.remove_temporaries(tmp_path, stale_only=True)
    assert sorted(os.listdir(tmp_path)) == sorted([mine.name, other.name])
    atomic.remove_temporaries(tmp_path)
    assert os.listdir(tmp_path) == [other.name]
