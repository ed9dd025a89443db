"""Regenerate every command output shown in docs/ and the README by running the command.

An example is a fenced ``text`` block whose lines start with ``$ yb ...`` commands, each
followed by what it printed and, when it did not exit 0 or the page wants it said,
``exit=N``. This script runs every such command from the repository root (or in a fresh
scratch folder prepared by a ``<!-- docs-setup: SHELL -->`` comment on the line before the
block, for scenarios such as `yb check` on a demo project) and writes the output back.
Blocks after ``<!-- docs: measured -->`` (benchmarks) are left alone: their figures are
timings of one machine, and the page says so.

    python docs/generate.py                 # rewrite every page
    python docs/generate.py docs/inspect.md # one page
    python docs/generate.py --list          # the examples, one per line

``tests/test_docs.py`` re-runs the examples and fails when a deterministic figure of a page
(parameters, FLOPs, shapes, bytes, exit codes) differs from what the tool prints now.
Latency is measured, not deterministic, and exempt.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
WIDTH = "150"
_SETUP = re.compile(r"<!--\s*docs-setup:\s*(.*?)\s*-->")
_MEASURED = re.compile(r"<!--\s*docs:\s*measured\s*-->")


@dataclass
class Command:
    line: str  # as shown, after "$ " (a trailing "# comment" is kept for the page)
    output: list[str] = field(default_factory=list)
    exit_code: int | None = None  # the page's exit=N, if it shows one

    @property
    def argv_text(self) -> str:
        text = self.line
        if " #" in text:  # a shell comment after the command
            text = text[: text.index(" #")]
        return text.strip()


@dataclass
class Example:
    page: Path
    start: int  # index of the opening fence line
    end: int  # index of the closing fence line
    commands: list[Command]
    setup: str | None = None
    measured: bool = False

    @property
    def label(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.start + 1}"


def examples(page: Path) -> list[Example]:
    """Every block of `$ yb ...` commands in a page."""
    lines = page.read_text().split("\n")
    found: list[Example] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        if lines[i].strip() in ("```", "```text", "```console") and i + 1 < j and lines[i + 1].startswith("$ yb "):
            before = lines[i - 1] if i > 0 else ""
            setup = _SETUP.search(before)
            ex = Example(page, i, j, _parse(lines[i + 1:j]), setup.group(1) if setup else None,
                         bool(_MEASURED.search(before)))
            if all(c.argv_text.startswith("yb ") for c in ex.commands):
                found.append(ex)
        i = j + 1
    return found


def _parse(body: list[str]) -> list[Command]:
    commands: list[Command] = []
    lines = iter(body)
    for line in lines:
        if line.strip() == "$ echo $?" and commands:  # the older form of exit=N
            commands[-1].exit_code = int(next(lines, "0").strip() or 0)
        elif line.startswith("$ "):
            commands.append(Command(line[2:]))
        elif commands and re.fullmatch(r"exit=\d+", line.strip()):
            commands[-1].exit_code = int(line.strip()[5:])
        elif commands:
            commands[-1].output.append(line)
    return commands


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"NO_COLOR": "1", "COLUMNS": WIDTH, "TERM": "dumb", "PYTHONHASHSEED": "0",
                "YB_IGNORE_NOISE": "1"})  # a latency budget's verdict must not hang on this machine's load
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run(ex: Example, timeout: float = 900) -> list[tuple[str, int]]:
    """Run an example's commands in order with bash (``yb`` is this checkout's); the output
    and exit code of each, machine paths removed."""
    scratch = Path(tempfile.mkdtemp(prefix="yb-docs-"))
    bindir = scratch / ".bin"
    bindir.mkdir()
    shim = bindir / "yb"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m yoloblocks_cli \"$@\"\n")
    shim.chmod(0o755)
    env = {**_env(), "REPO": str(ROOT), "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    cwd = ROOT
    try:
        if ex.setup:
            cwd = scratch / "demo"
            cwd.mkdir()
            subprocess.run(ex.setup, shell=True, check=True, cwd=cwd, env=env, executable="/bin/bash",
                           capture_output=True)
        results = []
        for cmd in ex.commands:
            # one pipe for both streams: the page shows what a terminal shows, in that order
            proc = subprocess.run(["/bin/bash", "-c", cmd.line], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, cwd=cwd, env=env, timeout=timeout)
            results.append((scrub(proc.stdout, cwd), proc.returncode))
        return results
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def scrub(text: str, cwd: Path) -> str:
    """Paths of this machine out: the working folder and the repository become relative."""
    for base in sorted({str(cwd), str(ROOT), str(Path(tempfile.gettempdir()).resolve())}, key=len, reverse=True):
        text = text.replace(base + os.sep, "").replace(base, ".")
    return "\n".join(line.rstrip() for line in text.rstrip("\n").split("\n"))


def render(ex: Example, results: list[tuple[str, int]]) -> list[str]:
    out = ["```text"]
    for cmd, (text, code) in zip(ex.commands, results):
        out.append(f"$ {cmd.line}")
        if text:
            out.extend(text.split("\n"))
        if code != 0 or cmd.exit_code is not None:
            out.append(f"exit={code}")
    out.append("```")
    return out


def regenerate(page: Path, only_fast: bool = False) -> int:
    """Rewrite a page's examples in place; returns how many were run."""
    lines = page.read_text().split("\n")
    found = [ex for ex in examples(page) if not ex.measured]
    for ex in reversed(found):  # from the end, so earlier line numbers stay valid
        print(f"running {ex.label}: {'; '.join(c.line for c in ex.commands)}", file=sys.stderr)
        lines[ex.start:ex.end + 1] = render(ex, run(ex))
    page.write_text("\n".join(lines))
    return len(found)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pages", nargs="*", type=Path, help="pages to regenerate (default: all of docs/ and README.md)")
    ap.add_argument("--list", action="store_true", help="list the examples and exit")
    args = ap.parse_args()
    pages = [p.resolve() for p in args.pages] or PAGES
    if args.list:
        for page in pages:
            for ex in examples(page):
                print(f"{ex.label}{' (measured)' if ex.measured else ''}: {'; '.join(c.line for c in ex.commands)}")
        return 0
    total = sum(regenerate(p) for p in pages)
    print(f"{total} examples regenerated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
