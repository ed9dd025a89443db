"""Atomic file writes: a report, figure or baseline is either complete or not there at all.

What "the file" is, for each kind of path:

- a regular file (or a new name): written to a temporary file beside it, then renamed over
  it. The temporary name is recognisable, ``.NAME.yb-tmp-PID-XXXX.SUFFIX``; one left behind
  by a killed run (its PID gone) is removed at the next write to the same name;
- a symlink: followed; its target is replaced atomically and the link stays a link;
- a FIFO, a character device (``/dev/stdout``, ``/dev/null``) or any other non-regular
  file: written in place, never renamed over (that would replace ``/dev/null`` itself);
- a missing folder: created, and said so on stderr (a typo must not go unnoticed).

:func:`check_output_path` validates all of this *before* a command starts its work.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Iterator

TMP_MARK = ".yb-tmp-"


def _target(path: str | Path) -> Path:
    """The file actually written: ``path`` with every symlink followed."""
    p = Path(path).expanduser()
    return Path(os.path.realpath(p)) if p.is_symlink() else p


def _is_special(path: Path) -> bool:
    """An existing file that is neither regular nor a directory (FIFO, device, socket)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def tmp_prefix(path: Path) -> str:
    return f".{path.name}{TMP_MARK}"


def clean_stale(path: Path) -> list[Path]:
    """Remove temporary files of ``path`` left by runs that no longer exist; returns them."""
    folder = path.parent if str(path.parent) else Path(".")
    removed = []
    try:
        candidates = list(folder.glob(f"{tmp_prefix(path)}*"))
    except OSError:
        return removed
    for tmp in candidates:
        pid_text = tmp.name[len(tmp_prefix(path)):].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _make_folder(folder: Path) -> None:
    if folder.is_dir():
        return
    folder.mkdir(parents=True, exist_ok=True)
    print(f"yb: created directory {folder}", file=sys.stderr)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, make_parents: bool = True) -> Iterator[Path]:
    """Yield the path to write; on success it becomes ``path`` (see the module docstring).

    On any failure the temporary file is removed and ``path`` is left as it was.
    """
    target = _target(path)
    if _is_special(target):
        yield target  # written in place: a FIFO or a device cannot be renamed over
        return
    folder = target.parent if str(target.parent) else Path(".")
    if make_parents:
        _make_folder(folder)
    clean_stale(target)
    fd, tmp = tempfile.mkstemp(prefix=f"{tmp_prefix(target)}{os.getpid()}-", suffix=target.suffix or ".tmp",
                               dir=folder)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; reports and baselines are for sharing
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename), or in place for a FIFO/device."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            if not _is_special(tmp):
                os.fsync(fh.fileno())


def check_output_path(path: str | Path, option: str = "--output") -> Path:
    """Refuse, before any work, an output path that cannot be written (exit 2 naming it):
    a directory, a place that is read-only or not a directory, an impossible name."""
    from yoloblocks_cli.errors import UsageError

    text = str(path)
    if not text or "\x00" in text:
        raise UsageError(f"{option} {text!r}: not a valid path")
    if len(Path(text).name.encode("utf-8", "surrogateescape")) > 255:
        raise UsageError(f"{option} {text}: the file name is longer than 255 bytes")
    try:
        target = _target(path)
        is_dir = target.is_dir()
    except OSError as exc:  # a symlink loop, a path too long
        raise UsageError(f"{option} {text}: {(exc.strerror or str(exc)).lower()}") from None
    if is_dir:
        raise UsageError(f"{option} {text}: is a directory; give a file name")
    if _is_special(target):
        if not os.access(target, os.W_OK):
            raise UsageError(f"{option} {text}: cannot be written (permission denied)")
        return target
    folder = target.parent if str(target.parent) else Path(".")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {text}: {existing} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=f"{tmp_prefix(target)}{os.getpid()}-", suffix=".probe", dir=existing)
    except OSError as exc:
        why = exc.strerror or exc.__class__.__name__
        raise UsageError(f"{option} {text}: cannot write in {existing} ({why.lower()})") from None
    os.close(fd)
    os.unlink(probe)
    return target
