"""docs/limits.md shows real output: every ```console block is run and compared verbatim."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from yoloblocks_cli.app import main
from yoloblocks_cli.loading import limits

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "limits.md"
BLOCKS = re.findall(r"```console\n\$ (yb [^\n]*)\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_the_page_has_examples():
    assert len(BLOCKS) == 9


@pytest.mark.parametrize("command, expected", BLOCKS, ids=[c[:50] for c, _ in BLOCKS])
def test_documented_output_is_what_the_tool_prints(command, expected, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv(limits.ENV_MAX_MEMORY, "")  # recorded, so a --max-memory run is undone
    with pytest.raises(SystemExit):
        main(shlex.split(command)[1:])
    captured = capsys.readouterr()
    assert _untimed(captured.out + captured.err) == _untimed(expected)


def _untimed(text: str) -> str:
    """The CI progress lines end with the configuration's seconds: measured, not compared."""
    return re.sub(r"(?m)^(\[ *\d+/\d+\] .*?)\s+\d+\.\d+ s$", r"\1", text)
