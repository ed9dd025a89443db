"""Re-run every command shown in docs/checkpoints.md and put its real output under it.

A block to refresh is written as

    <!-- yb: profile tests/fixtures/checkpoints/yolov5-best.pt --no-latency -->
    ```text
    (replaced by the output)
    ```

Commands run from the repository root with NO_COLOR=1 and COLUMNS=150, except ``hostile.pt``
examples, which run in a temporary folder holding a hostile checkpoint written by torch.save
(its payload would create a file next to it; the script checks that it did not).

    python docs/examples/checkpoints/render.py
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "checkpoints.md"
BLOCK = re.compile(r"(<!-- (yb|sh): (.+?) -->\n```text\n)(.*?)(```)", re.S)
HOSTILE = """
import os, torch
class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))
torch.save({"model": Payload(), "epoch": 1}, "hostile.pt")
"""


def run(kind: str, command: str, hostile_dir: Path) -> str:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "150", "PYTHONPATH": str(ROOT)}
    cwd = hostile_dir if "hostile.pt" in command else ROOT
    if kind == "yb":
        argv = [sys.executable, "-m", "yoloblocks_cli", *shlex.split(command)]
        r = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env)
        # progress lines go to stderr: shown only when the command failed or printed nothing else
        shown = r.stdout + (r.stderr if r.returncode or not r.stdout else "")
        text = shown + (f"(exit {r.returncode})\n" if r.returncode else "")
    else:
        r = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=cwd,
                           env={**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"})
        text = r.stdout + r.stderr
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def main() -> None:
    doc = DOC.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        subprocess.run([sys.executable, "-c", HOSTILE], check=True, cwd=folder)

        def fill(m: re.Match) -> str:
            print(f"{m.group(2)}: {m.group(3)}", file=sys.stderr)
            return m.group(1) + run(m.group(2), m.group(3), folder) + m.group(5)

        doc = BLOCK.sub(fill, doc)
        assert not (folder / "pwned").exists(), "the hostile checkpoint's payload ran"
    DOC.write_text(doc)


if __name__ == "__main__":
    main()
