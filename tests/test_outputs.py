"""Output paths (issue 16, bullet 4): validated before the work starts (exit 2 naming the
path); a missing folder is created and said so; a symlink is followed and its target
replaced atomically; a FIFO or device is written in place; temporary files carry a
recognisable name and a killed run's are cleaned at the next write."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from yoloblocks_cli.app import main
from yoloblocks_cli.errors import UsageError
from yoloblocks_cli.reporting.atomic import atomic_path, check_output_path, write_text_atomic
from yoloblocks_cli.reporting.junit import Case, write_junit


def _cli(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, capsys.readouterr().err.splitlines()


@pytest.fixture
def no_measuring(monkeypatch):
    """The command must stop at the option check: building the block would be a test failure."""
    import yoloblocks_cli.loading.load as load

    def refuse(*a, **k):
        raise AssertionError("the block was built before the output path was checked")

    monkeypatch.setattr(load, "build_block", refuse)
    monkeypatch.setattr(load, "resolve_spec", refuse)


@pytest.mark.parametrize("case, message", [
    ("directory", "--output {p}: is a directory; give a file name"),
    ("under-a-file", "--output {p}: {f} is not a directory"),
    ("long-name", "--output {p}: the file name is longer than 255 bytes"),
])
def test_bad_output_paths_are_exit_2_before_work(tmp_path, capsys, no_measuring, case, message):
    f = tmp_path / "plain.txt"
    f.write_text("x")
    p = {"directory": tmp_path, "under-a-file": f / "r.json", "long-name": tmp_path / ("n" * 300 + ".json")}[case]
    code, err = _cli(capsys, ["inspect", "Conv", "--size", "3x8x8", "--output", str(p)])
    assert (code, err) == (2, ["error: " + message.format(p=p, f=f)])


def test_junit_path_is_checked_too(tmp_path, capsys):
    code, err = _cli(capsys, ["trace", "Conv", "--junit", str(tmp_path)])
    assert (code, err) == (2, [f"error: --junit {tmp_path}: is a directory; give a file name"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UsageError, match=r"cannot write in .*ro \(permission denied\)"):
            check_output_path(ro / "r.json")
    finally:
        ro.chmod(0o700)


def test_a_read_only_filesystem_is_refused():
    if not os.path.isdir("/proc/self") or os.access("/proc", os.W_OK) and _can_create("/proc"):
        pytest.skip("no read-only place to try")
    with pytest.raises(UsageError, match=r"--output /proc/r\.json: cannot write in /proc"):
        check_output_path("/proc/r.json")


def _can_create(folder: str) -> bool:
    try:
        fd = os.open(os.path.join(folder, ".yb-probe"), os.O_CREAT | os.O_WRONLY)
    except OSError:
        return False
    os.close(fd)
    os.unlink(os.path.join(folder, ".yb-probe"))
    return True


def test_missing_folder_is_created_and_said(tmp_path, capsys):
    target = tmp_path / "new" / "sub" / "r.json"
    check_output_path(target)  # valid: the nearest existing folder is writable
    assert not (tmp_path / "new").exists()  # validation creates nothing
    write_text_atomic(target, "{}\n")
    assert target.read_text() == "{}\n"
    assert capsys.readouterr().err == f"yb: created directory {tmp_path / 'new' / 'sub'}\n"


def test_symlink_is_followed_and_its_target_replaced(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("old\n")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_text_atomic(link, "new\n")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json"]


def test_fifo_is_written_in_place(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    write_text_atomic(fifo, '{"ok": true}\n')
    reader.join(10)
    assert got == [b'{"ok": true}\n']
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_device_is_written_in_place():
    with atomic_path("/dev/null") as p:
        assert str(p) == "/dev/null"  # never a temporary file renamed over the device
    write_text_atomic("/dev/null", "x")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_killed_runs_temporary_files_are_cleaned_at_the_next_write(tmp_path):
    dead = tmp_path / ".base.json.yb-tmp-999999999-abc123.json"  # no such process
    live = tmp_path / f".base.json.yb-tmp-{os.getpid()}-def456.json"  # a write in progress
    other = tmp_path / ".other.json.yb-tmp-999999999-x.json"  # another file's
    for p in (dead, live, other):
        p.write_text("partial")
    write_text_atomic(tmp_path / "base.json", "{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["base.json", live.name, other.name])


def test_temporary_name_is_recognisable_and_removed_on_failure(tmp_path):
    seen = []
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "r.json") as tmp:
            seen.append(tmp.name)
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert seen[0].startswith(f".r.json.yb-tmp-{os.getpid()}-") and seen[0].endswith(".json")
    assert list(tmp_path.iterdir()) == []


def test_junit_writer_is_atomic_and_follows_symlinks(tmp_path):
    real = tmp_path / "real.xml"
    real.write_text("old")
    link = tmp_path / "j.xml"
    link.symlink_to(real)
    write_junit(link, "suite", [Case(classname="c", name="n", status="pass")])
    assert link.is_symlink() and real.read_text().startswith("<?xml")
