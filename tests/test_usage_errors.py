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


@pytest.mark.parametrize("argv", [["profile", "yoloe-11n", "--size", "64x"], ["trace", "yoloe-11n", "--size", "64x"]])
def test_a_malformed_model_size_stops_before_the_model_is_built(capsys, argv, monkeypatch):
    """The size is checked first: no build (seconds for a large model) and no build note before the error."""
    import yoloblocks_cli.loading.yaml_model as yaml_model

    def no_build(*a, **k):
        raise AssertionError("the model was built before the size was checked")

    monkeypatch.setattr(yaml_model, "build_model", no_build)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err == "error: malformed size '64x': expected digits joined by 'x', e.g. 64x160x160\n"
