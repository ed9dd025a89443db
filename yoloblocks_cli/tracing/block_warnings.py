"""Python warnings raised while a block runs, kept with their file:line for the report.

PyTorch often says what is wrong before anything fails ("Implicit dimension choice for
softmax has been deprecated" points at the very line that mixes a batch). Printed once to
stderr they scroll away or vanish behind ``--json``; here every warning of the sweep is
recorded (each distinct one once, with how often it was raised) and the report shows it.
Warnings the tool raises itself (its own re-runs while locating a failure) are dropped.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


@dataclass(frozen=True)
class BlockWarning:
    category: str
    message: str
    file: str
    line: int
    count: int

    def as_json(self) -> dict[str, Any]:
        return {"category": self.category, "message": self.message, "file": self.file, "line": self.line,
                "count": self.count}

    def __str__(self) -> str:
        times = f" (x{self.count})" if self.count > 1 else ""
        return f"{self.file}:{self.line}: {self.category}: {self.message}{times}"


_TOOL = str(Path(__file__).resolve().parents[1])  # yoloblocks_cli


@contextlib.contextmanager
def collect_warnings() -> Iterator[list[BlockWarning]]:
    """Record every warning raised inside the block; the list is filled when the block ends."""
    from yoloblocks_cli.tracing.tracer import display_path

    out: list[BlockWarning] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield out
        finally:
            counts: dict[tuple, int] = {}
            for w in caught:
                try:
                    own = str(Path(w.filename).resolve()).startswith(_TOOL)
                except OSError:
                    own = False
                if own or issubclass(w.category, ResourceWarning):
                    continue  # a ResourceWarning fires where garbage collection ran, not where the leak is
                key = (w.category.__name__, str(w.message).strip(), display_path(w.filename), w.lineno)
                counts[key] = counts.get(key, 0) + 1
            out.extend(BlockWarning(*key, count) for key, count in counts.items())
