"""Bounded before work (issue 16, bullet 1): YAML size and alias expansion, repeats,
multipliers, channel counts, input bytes and constructed tensors are checked against
their limits before anything is allocated; past a limit it is exit 2 with the estimate."""

from __future__ import annotations

import pytest

from yoloblocks_cli.app import main
from yoloblocks_cli.errors import UsageError
from yoloblocks_cli.loading import limits
from yoloblocks_cli.loading.spec import parse_block_size, parse_model_size
from yoloblocks_cli.loading.yaml_model import build_model, read_yaml

SMALL_MODEL = """nc: 80
backbone:
  - [-1, 1, Conv, [16, 3, 2]]
head:
  - [-1, 1, Conv, [32, 3, 1]]
"""


@pytest.fixture(autouse=True)
def _default_limit(monkeypatch):
    monkeypatch.setenv(limits.ENV_MAX_MEMORY, "")  # recorded, so a --max-memory run is undone


def _cli(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, capsys.readouterr().err.splitlines()


def _bomb(levels: int, fan: int = 10) -> str:
    """A billion-laughs document: level k is ``fan`` aliases of level k-1 (fan**levels leaves)."""
    lines = [f"l0: &l0 [{', '.join(['1'] * fan)}]"]
    for k in range(1, levels):
        lines.append(f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * fan)}]")
    return "\n".join(lines) + "\n"


def test_expanded_nodes_counts_aliases_as_expanded():
    import yaml

    root = yaml.compose("a: &x [1, 2]\nb: [*x, *x]\n", Loader=yaml.SafeLoader)
    # mapping 1 + key a 1 + [1, 2] 3 + key b 1 + [*x, *x] (1 + 3 + 3) = 13
    assert limits.expanded_nodes(root) == 13


@pytest.mark.parametrize("where", ["args", "from", "repeats", "module", "nc", "kpt_shape", "row"])
def test_alias_bomb_is_refused_before_construction(tmp_path, where):
    last = "*l5"
    rows = {"args": f"[-1, 1, Conv, [16, 3, 2, {last}]]", "from": f"[{last}, 1, Conv, [16, 3, 2]]",
            "repeats": f"[-1, {last}, Conv, [16, 3, 2]]", "module": f"[-1, 1, {last}, [16, 3, 2]]",
            "row": last}
    row = rows.get(where, "[-1, 1, Conv, [16, 3, 2]]")
    extra = {"nc": f"nc: {last}\n", "kpt_shape": f"kpt_shape: {last}\n"}.get(where, "")
    p = tmp_path / "bomb.yaml"
    p.write_text(_bomb(6) + extra + f"backbone:\n  - {row}\nhead: []\n")  # 10**6 leaves from 700 bytes
    with pytest.raises(limits.LimitExceeded, match=r"aliases expand to more than 100,000 nodes \(alias expansion limit"):
        read_yaml(p)


def test_alias_bomb_cli_is_one_line_exit_2(tmp_path, capsys):
    p = tmp_path / "bomb.yaml"
    p.write_text(_bomb(9) + "backbone:\n  - [-1, 1, Conv, [16, 3, 2, *l8]]\nhead: []\n")  # 10**9 leaves
    code, err = _cli(capsys, ["profile", str(p), "--no-latency", "--no-memory"])
    assert code == 2
    assert err == [f"error: {p}: YAML aliases expand to more than 100,000 nodes (alias expansion limit; "
                   "a model file has a few thousand at most)"]


def test_a_harmless_alias_still_works(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text("w: &w [16, 3, 2]\nnc: 80\nbackbone:\n  - [-1, 1, Conv, *w]\nhead: []\n")
    assert build_model(p).params == 16 * 3 * 9 + 32  # conv weight + BN weight and bias


def test_document_size_is_refused_before_parsing(tmp_path):
    p = tmp_path / "big.yaml"
    p.write_text(SMALL_MODEL + "data: [" + "1, " * 800_000 + "1]\n")
    with pytest.raises(limits.LimitExceeded, match=r"big.yaml: the YAML is 2.29 MiB, over the limit of 2 MiB"):
        read_yaml(p)


@pytest.mark.parametrize("content, message", [
    ("[-1, 1000000000, Conv, [16, 3, 1]]",
     "layer 0 (Conv): 1,000,000,000 repeats is over the limit of 1,000"),
    ("[-1, 1, Conv, [0, 3, 2]]", "layer 0 (Conv): 0 output channels is out of range 1..131,072"),
    ("[-1, 600, C2f, [16]]\ndepth_multiple: 2.0",
     "layer 0 (C2f): 600 repeats x depth_multiple = 1,200, over the limit of 1,000"),
    ("[-1, 1, Conv, [1000000, 3, 2]]", "layer 0 (Conv): 1,000,000 output channels is out of range 1..131,072"),
])
def test_rows_past_a_bound_are_refused(tmp_path, content, message):
    p = tmp_path / "m.yaml"
    row, _, header = content.partition("\n")
    p.write_text("nc: 80\n" + (header + "\n" if header else "") + f"backbone:\n  - {row}\nhead: []\n")
    with pytest.raises(limits.LimitExceeded) as exc:
        build_model(p)
    assert str(exc.value) == f"{p}:{4 if header else 3}: {message}"
    assert limits.allocated_estimate() == 0  # refused before the layer was constructed


@pytest.mark.parametrize("header, message", [
    ("depth_multiple: 1.0e+9", "depth_multiple 1000000000.0 is out of range (0, 16]"),
    ("width_multiple: 1.0e+6", "width_multiple 1000000.0 is out of range (0, 16]"),
    ("width_multiple: .inf", "width_multiple inf is out of range (0, 16]"),
    ("depth_multiple: deep", "depth_multiple must be a number, got 'deep'"),
    ("channels: three", "channels must be a positive integer, got 'three'"),
    ("nc: -3", "nc -3 is out of range 1..131,072"),
    ("scales: {n: [0.33, 1.0e+6, 1024]}", "width_multiple 1000000.0 is out of range (0, 16]"),
])
def test_scaling_values_are_checked_before_any_layer(tmp_path, header, message):
    p = tmp_path / "m.yaml"
    p.write_text(SMALL_MODEL.replace("nc: 80\n", "" if header.startswith("nc") else "nc: 80\n") + header + "\n")
    limits.reset_allocations()
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        build_model(p)
    assert limits.allocated_estimate() == 0


@pytest.mark.parametrize("data, message", [
    ("utf16", "not a UTF-8 text file (UTF-16: byte 0 cannot be decoded)"),
    ("binary", "not a UTF-8 text file (binary or not UTF-8: byte 128 cannot be decoded)"),
])
def test_binary_and_utf16_yaml_are_bad_input(tmp_path, capsys, data, message):
    p = tmp_path / "m.yaml"
    p.write_bytes(SMALL_MODEL.encode("utf-16") if data == "utf16" else bytes(range(256)))
    code, err = _cli(capsys, ["profile", str(p), "--no-latency", "--no-memory"])
    assert (code, err) == (2, [f"error: {p}: {message}"])


def test_a_weight_past_the_memory_limit_is_refused_before_it_is_allocated(monkeypatch):
    import torch
    from torch import nn

    from yoloblocks_cli.loading.load import BlockSpec, build_block

    reached = []

    class Huge(nn.Module):
        def __init__(self, c1: int, c2: int):
            super().__init__()
            self.small = nn.Linear(c1, 4)
            self.w = nn.Parameter(torch.empty(c2, c2))  # 4 * c2**2 bytes
            reached.append(True)

    monkeypatch.setenv(limits.ENV_MAX_MEMORY, "1G")
    with pytest.raises(limits.LimitExceeded) as exc:
        build_block(BlockSpec("Huge", Huge, "file"), 8, [1_000_000])
    assert not reached
    assert str(exc.value) == (
        "Huge(8, 1000000): its tensors would need at least 3.64 TiB (a 1000000x1000000 tensor of 3.64 TiB on top of "
        "144 B already built), over the memory limit of 1 GiB (--max-memory); nothing was allocated")


def test_the_model_budget_counts_every_layer(tmp_path, monkeypatch):
    """Each Conv(256, 256, 3) weighs 2.25 MiB; the fifth (layer 5) passes a 10 MiB limit, before it is built."""
    p = tmp_path / "m.yaml"
    p.write_text("nc: 80\nbackbone:\n  - [-1, 1, Conv, [256, 3, 1]]\n" + "  - [-1, 1, Conv, [256, 3, 1]]\n" * 5
                 + "head: []\n")
    monkeypatch.setenv(limits.ENV_MAX_MEMORY, "10M")
    with pytest.raises(limits.LimitExceeded, match=r"m.yaml:8: layer 5 \(Conv\): Conv\(256, 256, 3, 1\) x 1: its "
                       r"tensors would need at least 11.\d MiB"):
        build_model(p)


def test_an_input_past_the_memory_limit_is_refused_from_its_shape(monkeypatch, capsys):
    monkeypatch.setenv(limits.ENV_MAX_MEMORY, "1G")
    with pytest.raises(limits.LimitExceeded, match=r"size 1x3x65536x65536 needs 48 GiB for the input tensor alone"):
        parse_model_size("65536x65536")
    code, err = _cli(capsys, ["inspect", "C2f", "--size", "8x100000x100000"])
    assert code == 2
    assert err == ["error: size 1x8x100000x100000 needs 298 GiB for the input tensor alone (1x8x100000x100000 x 4 "
                   "bytes), over the memory limit of 1 GiB (--max-memory)"]


def test_max_memory_option_sets_the_limit(capsys, monkeypatch):
    code, err = _cli(capsys, ["--max-memory", "1M", "inspect", "C2f", "--size", "64x80x80"])
    assert code == 2
    assert err == ["error: size 1x64x80x80 needs 1.56 MiB for the input tensor alone (1x64x80x80 x 4 bytes), "
                   "over the memory limit of 1 MiB (--max-memory)"]
    code, err = _cli(capsys, ["--max-memory", "lots", "inspect", "C2f", "--size", "64x80x80"])
    assert (code, err) == (2, ["error: malformed --max-memory 'lots': expected bytes such as 8G, 512M, 1.5GiB or 50%"])


@pytest.mark.parametrize("text, value", [("8G", 8 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29), ("4096", 4096)])
def test_parse_memory(text, value):
    assert limits.parse_memory(text) == value


def test_default_limit_is_half_the_available_memory():
    assert limits.memory_limit() == int(limits.available_memory() * 0.5)


@pytest.mark.parametrize("argv, line", [
    (["inspect", "C2f", "--size", "64x80x80", "--threads", "100000"], None),
    (["inspect", "C2f", "--size", "64x80x80", "--batch", "-1"], "error: --batch must be a positive integer, got -1"),
    (["inspect", "C2f", "--size", "64x80x80", "--batch", "0"], "error: --batch must be a positive integer, got 0"),
    (["inspect", "C2f", "--size", "64x80x" + "9" * 20],
     "error: malformed size '64x80x99999999999999999999': a dimension has 20 digits (at most 9)"),
    (["inspect", "C2f", "--size", "64x80x" + "9" * 5000],
     "error: malformed size '64x80x9999999999999999999999999999999999...': a dimension has 5000 digits (at most 9)"),
    (["inspect", "Conv", "--size", "3x8x8", "--args", "1+" * 30000 + "1"], None),
    (["inspect", "Conv", "--size", "3x8x8", "--args", "[" * 200 + "]" * 200],
     "error: --args nests brackets 200 deep (at most 100)"),
    (["inspect", "Conv", "--size", "3x8x8", "--args", "[0, 3, 2]", "--no-latency", "--no-memory"],
     "error: Conv(3, 0, 3, 2) has an empty parameter conv.weight of shape 0x3x3x3: a width or size argument is 0"),
], ids=["threads", "batch-1", "batch0", "20-digits", "5000-digits", "nested-plus", "nested-brackets", "conv0"])
def test_bad_numbers_are_one_line_exit_2(capsys, argv, line):
    import os

    code, err = _cli(capsys, argv)
    assert code == 2 and len(err) == 1, err
    if argv[-2:] == ["--threads", "100000"]:
        cap = (os.cpu_count() or 1) * 4
        line = f"error: --threads must be at most {cap} ({os.cpu_count()} CPUs x 4), got 100000"
    if line is None:
        assert err[0].startswith("error: malformed --args '1+1+1+") and err[0].endswith(
            "...': only Python literals are accepted (RecursionError)")
    else:
        assert err == [line]
