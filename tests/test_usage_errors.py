"""Usage errors typer finds (missing option, value out of range, unknown command) print one
line and exit 2, like ours; never a traceback or a multi-line box."""

from __future__ import annotations

import pytest

from yoloblocks_cli.app import main


@pytest.mark.parametrize("argv, line", [
    (["inspect", "C2f"], "error: yb inspect: Missing option '--size' / '-s'. (see yb inspect --help)"),
    (["profile", "yolov8n", "--runs", "0"],
     "error: yb profile: Invalid value for '--runs': 0 is not in the range x>=1. (see yb profile --help)"),
    (["--scan", "gpu", "profile", "yolov8n"],
     "error: yb: Invalid value for '--scan': 'gpu' is not one of 'auto', 'torch', 'kernel'. (see yb --help)"),
    (["nosuchcommand"], "error: yb: No such command 'nosuchcommand'. (see yb --help)"),
], ids=["missing-option", "out-of-range", "bad-choice", "unknown-command"])
def test_typer_usage_error_is_one_line_exit_2(capsys, argv, line):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [line]


def test_help_and_version_still_exit_0(capsys):
    for argv in (["--version"], ["inspect", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "yoloblocks 0." in out and "--size" in out


def test_no_arguments_prints_the_help_only(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2  # as typer's standalone mode exits for a bare `yb`
    captured = capsys.readouterr()
    assert "Usage: yb" in captured.out + captured.err and "error" not in captured.err
