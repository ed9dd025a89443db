"""The docs are executed: every `$ yb ...` example of docs/ and the README is re-run and
must show the figures the tool prints now.

Deterministic figures are compared (parameter and FLOP counts, bytes, shapes, GFLOPs on
FLOPs lines, the numbers in non-latency table columns, verdict counts, exit codes);
latency, time shares and seconds are measured and exempt. Regenerate a page with
``python docs/generate.py docs/PAGE.md``. Cheap examples run by default; models and
sweeps are ``slow``.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
generate = importlib.util.module_from_spec(_spec)
sys.modules["docs_generate"] = generate  # dataclasses look their module up while the file runs
_spec.loader.exec_module(generate)

_MEASURED_WORDS = re.compile(r"latency|\bms\b|images/s|\bIQR\b|time %|seconds|wall|\d\s?s\b", re.I)
_COMMA_INT = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d.,])")
_SHAPE = re.compile(r"(?<![\w.])\d+(?:x\d+){1,4}(?![\w.])")
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")
_COUNTS = re.compile(r"\b\d+ (?:passed|failed|skipped|configurations?|probes?)\b")
_FLOPS_LINE = re.compile(r"flops", re.I)


def _cells(line: str) -> list[str] | None:
    """The cells of a table row (rich box or Markdown), or None for any other line."""
    if "│" in line or "┃" in line:
        return [c for c in re.split(r"[│┃]", line)[1:-1]]
    if line.lstrip().startswith("|") and line.rstrip().endswith("|"):
        return line.strip()[1:-1].split("|")
    return None


def figures(text: str) -> Counter:
    """The deterministic figures of a command's output, as strings (a multiset)."""
    found: Counter = Counter()
    header: list[str] = []
    for line in text.split("\n"):
        cells = _cells(line)
        if cells is not None:
            if "┃" in line or (not header and "|" in line and not _NUMBER.search(line)):
                header = [(header[i] + " " + c) if i < len(header) else c for i, c in enumerate(cells)] \
                    if "┃" in line else cells
                continue
            for i, cell in enumerate(cells):
                title = header[i] if i < len(header) else ""
                if _MEASURED_WORDS.search(title) or _MEASURED_WORDS.search(cell) or set(cell.strip()) <= set("-: "):
                    continue
                found.update(_NUMBER.findall(cell))
            continue
        header = [] if not line.strip() else header
        if _MEASURED_WORDS.search(line) and not _FLOPS_LINE.search(line):
            found.update(_SHAPE.findall(line))
            continue
        found.update(_COMMA_INT.findall(line))
        found.update(_SHAPE.findall(line))
        found.update(_COUNTS.findall(line))
        if _FLOPS_LINE.search(line) and not _MEASURED_WORDS.search(line):
            found.update(n for n in _NUMBER.findall(line) if "." in n)
    return found


# Pages written by their own scripts, each with its own drift test (test_limits_doc, test_export_probe,
# test_user_blocks, test_latency): re-run here only in the slow sweep.
_OWN_GENERATOR = {"limits.md", "export.md", "user-blocks.md", "latency.md", "checkpoints.md", "models.md"}


# Pages whose generator writes another format (no exit=N lines, the commands' own CI lines): their own
# tests compare them (test_limits_doc verbatim, test_user_blocks line by line); this test would only
# report the format.
_OWN_FORMAT = {"limits.md", "user-blocks.md"}


def _examples() -> list:
    found = []
    for page in generate.PAGES:
        if page.name in _OWN_FORMAT:
            continue
        for ex in generate.examples(page):
            if ex.measured:
                continue
            slow = page.name in _OWN_GENERATOR or any(
                k in " ".join(c.line for c in ex.commands)
                for k in ("yolo", ".yaml", "yb scale", "--layers", "Mamba", "VSSBlock", "S2Attention", "export"))
            found.append(pytest.param(ex, id=ex.label, marks=[pytest.mark.slow] if slow else []))
    return found


@pytest.mark.parametrize("example", _examples())
def test_page_shows_what_the_tool_prints_now(example):
    fresh = generate.run(example)
    for cmd, (text, code) in zip(example.commands, fresh):
        shown = "\n".join(cmd.output)
        assert (cmd.exit_code or 0) == code, f"{example.label}: `{cmd.line}` now exits {code}"
        now, page = figures(text), figures(shown)
        assert now == page, (f"{example.label}: `{cmd.line}`: figures differ; only on the page: "
                             f"{dict(page - now)}, only now: {dict(now - page)} "
                             f"(regenerate: python docs/generate.py {example.page.relative_to(ROOT)})")


def test_figures_ignore_latency_and_keep_counts():
    text = ("parameters  29,056 total · 29,056 trainable · 388 buffer elements\n"
            "latency     961.717 ms median · IQR 14.446 ms · 2 runs · 1,040.1 images/s\n"
            "FLOPs at 1x3x320x320 (FLOPs = 2 x MACs): torch 2.186 · ultralytics (thop) 2.214 GFLOPs\n"
            "| Target | Params | GFLOPs (torch) | Latency (ms) |\n| --- | ---: | ---: | ---: |\n"
            "| C2f | 29,056 | 0.092 | 1.07 |\n\n8 configurations x 6 probes: 4 passed, 4 failed")
    got = figures(text)
    assert got == Counter({"29,056": 3, "1x3x320x320": 1, "2.186": 1, "2.214": 1, "0.092": 1,
                           "8 configurations": 1, "6 probes": 1, "4 passed": 1, "4 failed": 1})


def test_a_stale_figure_is_caught():
    """docs/compare.md once showed 0.00860 GFLOPs for MLLAttention where the tool printed 0.035."""
    page = "| MLLAttention(64) | 1x64x40x40 | 33,792 | 0.00860 | 0.0300 | 0.0286 | 0.930 | 1.2 |"
    now = "| MLLAttention(64) | 1x64x40x40 | 33,792 | 0.035 | 0.0300 | 0.0286 | 0.812 | 1.2 |"
    header = "| Target | Input | Params | GFLOPs (torch) | GFLOPs (ultralytics) | GFLOPs (fvcore) | Latency (ms) | Peak memory (MiB) |\n"
    assert figures(header + page) != figures(header + now)
    assert figures(header + page.replace("0.930", "0.999")) == figures(header + page)


def test_no_page_names_a_path_of_this_machine():
    bad = []
    for page in generate.PAGES:
        for n, line in enumerate(page.read_text().split("\n"), 1):
            if re.search(r"(?<![\w.])/(?:work|root|home|tmp|Users)/", line):
                bad.append(f"{page.relative_to(ROOT)}:{n}: {line.strip()[:80]}")
    assert bad == []
