"""`yb inspect` end to end: JSON contract, exact numbers, several sizes, and one line + exit code per error."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_yb
from yoloblocks_cli.app import main
from yoloblocks_cli.errors import CheckFailed

FAST = ("--runs", "2", "--warmup", "0", "--max-time", "0.2")

# C2f(c1, c2) with n=1, e=0.5: cv1 1x1 c1->c2, one 3x3 bottleneck pair at c2/2, cv2 1x1 (1.5 c2)->c2.
C2F_64_PARAMS = (64 * 64 + 2 * 64) + 2 * (32 * 32 * 9 + 2 * 32) + (96 * 64 + 2 * 64)
C2F_64_BUFFERS = 2 * (64 + 32 + 32 + 64) + 4  # running mean/var per BN channel + num_batches_tracked


def c2f_64_flops(h: int, w: int) -> int:
    return 2 * (64 * 64 + 2 * 32 * 32 * 9 + 96 * 64) * h * w


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_json_contract_and_exact_numbers_for_c2f():
    proc = run_yb("inspect", "C2f", "--size", "64x16x16", "--json", "--threads", "1", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # fvcore's unsupported-op warnings and JIT warnings are captured
    r = json.loads(proc.stdout)
    assert {"schema", "command", "target", "env", "input_shape", "output_shape", "params", "flops",
            "latency_ms", "memory_bytes", "results"} <= set(r)
    assert r["schema"] == "yoloblocks.report/1" and r["command"] == "inspect" and r["target"] == "C2f"
    assert set(r["env"]) == {"torch", "device", "device_name", "dtype", "threads", "yoloblocks", "scan"}
    assert r["env"]["scan"] == "torch"  # no CUDA extension here: Mamba blocks would use the PyTorch scan
    assert r["env"]["device"] == "cpu" and r["env"]["dtype"] == "fp32" and r["env"]["threads"] == 1
    assert r["block"]["call"] == "C2f(64, 64)"
    assert r["input_shape"] == [1, 64, 16, 16] and r["output_shape"] == [1, 64, 16, 16]
    assert r["params"] == {"total": C2F_64_PARAMS, "trainable": C2F_64_PARAMS, "buffers": C2F_64_BUFFERS}
    assert C2F_64_PARAMS == 29056
    assert {"torch", "ultralytics", "fvcore", "uncounted"} <= set(r["flops"])
    assert r["flops"]["torch"] == c2f_64_flops(16, 16)
    assert set(r["latency_ms"]) >= {"median", "iqr", "runs"} and r["latency_ms"]["runs"] >= 2
    assert set(r["memory_bytes"]) >= {"peak", "method"}
    assert r["memory_bytes"]["method"].startswith("cpu-tensor-allocations")
    assert r["results"] == [{k: r[k] for k in r["results"][0]}]


def test_several_sizes_one_result_each(yb_in):
    code, out, err = yb_in("inspect", "C2f", "--size", "64x16x16,64x8x8", "--size", "2x64x8x12", "--json",
                           "--no-latency", "--counter", "torch")
    assert code == 0, err
    r = json.loads(out)
    assert [x["input_shape"] for x in r["results"]] == [[1, 64, 16, 16], [1, 64, 8, 8], [2, 64, 8, 12]]
    assert [x["flops"]["torch"] for x in r["results"]] == [c2f_64_flops(16, 16), c2f_64_flops(8, 8),
                                                           2 * c2f_64_flops(8, 12)]
    assert r["input_shape"] == [1, 64, 16, 16] and r["latency_ms"] is None
    assert r["flops"]["ultralytics"] is None


def test_table_output_for_several_sizes(yb_in):
    code, out, _ = yb_in("inspect", "C2f", "--size", "64x16x16,64x8x8", "--no-latency", "--counter", "torch")
    assert code == 0
    assert "C2f(64, 64)" in out and "1x64x16x16" in out and "1x64x8x8" in out
    assert f"{C2F_64_PARAMS:,} total" in out


def test_file_block_with_kwargs_matmul_and_tuple_output(yb_in, tmp_path):
    f = write(tmp_path, "my_attn.py", """
        import torch
        from torch import nn

        class Attn(nn.Module):
            def __init__(self, dim, num_heads=1):
                super().__init__()
                self.num_heads = num_heads
                self.qk = nn.Conv2d(dim, 2 * dim, 1, bias=False)

            def forward(self, x):
                b, c, h, w = x.shape
                q, k = self.qk(x).flatten(2).chunk(2, 1)
                a = torch.matmul(q.transpose(1, 2), k)  # (b, hw, hw)
                return x, a
        """)
    code, out, err = yb_in("inspect", f"{f}:Attn", "--size", "8x4x5", "--kwargs", "num_heads=2", "--json",
                           "--no-latency", "--no-memory")
    assert code == 0, err
    r = json.loads(out)
    assert r["block"]["call"] == "Attn(8, num_heads=2)"
    assert r["output_shape"] == [[1, 8, 4, 5], [1, 20, 20]]
    conv, mm = 2 * 8 * 16 * 20, 2 * 20 * 20 * 8
    assert r["flops"]["torch"] == conv + mm and r["flops"]["fvcore"] == conv + mm


def test_output_file_is_written_atomically(yb_in, tmp_path):
    dest = tmp_path / "sub" / "report.json"
    code, out, _ = yb_in("inspect", "C2f", "--size", "64x8x8", "--output", str(dest), "--no-latency",
                         "--no-memory", "--counter", "torch")
    assert code == 0 and f"JSON report written to {dest}" in out
    assert json.loads(dest.read_text())["flops"]["torch"] == c2f_64_flops(8, 8)
    assert [p.name for p in dest.parent.iterdir()] == ["report.json"]  # no temp file left behind


def test_bf16_channels_last(yb_in):
    code, out, err = yb_in("inspect", "C2f", "--size", "64x8x8", "--dtype", "bf16", "--channels-last", "--json",
                           "--no-latency", "--counter", "torch")
    assert code == 0, err
    r = json.loads(out)
    assert r["env"]["dtype"] == "bf16" and r["options"]["channels_last"] is True
    assert r["flops"]["torch"] == c2f_64_flops(8, 8)


def test_train_adds_forward_backward_latency(yb_in):
    code, out, err = yb_in("inspect", "C2f", "--size", "64x8x8", "--train", "--json", "--counter", "torch",
                           "--no-memory", *FAST)
    assert code == 0, err
    r = json.loads(out)
    assert r["train_latency_ms"]["mode"] == "train forward+backward" and r["train_latency_ms"]["runs"] >= 2


# ----------------------------------------------------------------------------- errors: one line, exit code


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_unknown_block_suggests(yb_in):
    code, _, err = yb_in("inspect", "C2ff", "--size", "64x8x8")
    assert code == 2
    assert _one_line(err).startswith("error: unknown block 'C2ff' (did you mean: C2f")


def test_malformed_size(yb_in):
    code, _, err = yb_in("inspect", "C2f", "--size", "64x80")
    assert code == 2
    assert _one_line(err) == "error: malformed size '64x80': a block takes CxHxW or BxCxHxW, e.g. 64x160x160"


def test_bad_dtype(yb_in):
    code, _, err = yb_in("inspect", "C2f", "--size", "64x8x8", "--dtype", "fp8")
    assert code == 2
    assert _one_line(err) == "error: unknown dtype 'fp8': expected fp32, fp16 or bf16"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_without_cuda(yb_in):
    code, _, err = yb_in("inspect", "C2f", "--size", "64x8x8", "--device", "cuda")
    assert code == 2
    assert _one_line(err).startswith("error: CUDA requested but torch.cuda.is_available() is False")


def test_user_file_that_fails_to_import(yb_in, tmp_path):
    f = write(tmp_path, "broken.py", """\
        import torch
        raise ImportError("needs mamba_ssm")
        """)
    code, _, err = yb_in("inspect", f"{f}:Block", "--size", "8x4x4")
    assert code == 2
    assert _one_line(err) == f"error: cannot import {f} (line 2): ImportError: needs mamba_ssm"


def test_constructor_raising_is_exit_1(yb_in):
    code, _, err = yb_in("inspect", f"{ROOT}/docs/examples/my_blocks.py:MyAttention", "--size", "64x8x8",
                         "--kwargs", "num_heads=5")
    assert code == 1
    assert _one_line(err) == ("error: MyAttention(64, num_heads=5) raised ValueError: "
                              "dim=64 is not divisible by num_heads=5")


SQUARE_ONLY = """\
    import math
    import torch.nn.functional as F
    from torch import nn

    class SquareOnly(nn.Module):
        def __init__(self, c1):
            super().__init__()

        def forward(self, x):
            b, c, h, w = x.shape
            s = int(math.sqrt(h * w))
            return F.interpolate(x, size=(s, s, s))
    """


def test_forward_raising_names_the_line_inside_the_block(yb_in, tmp_path):
    f = write(tmp_path, "square.py", SQUARE_ONLY)
    code, _, err = yb_in("inspect", f"{f}:SquareOnly", "--size", "8x4x6")
    assert code == 1
    line = _one_line(err)
    assert line.startswith("error: SquareOnly(8) forward on 1x8x4x6 raised ValueError: ")
    assert line.endswith(f"(at {f}:12 in forward)")  # not a frame inside torch/nn/functional.py


def test_debug_shows_the_exception(tmp_path, monkeypatch):
    f = write(tmp_path, "square.py", SQUARE_ONLY)
    with pytest.raises(CheckFailed):
        main(["inspect", f"{f}:SquareOnly", "--size", "8x4x6", "--debug"])


def test_subprocess_error_has_no_traceback():
    proc = run_yb("inspect", "NoSuchBlockAnywhere", "--size", "64x8x8")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: unknown block 'NoSuchBlockAnywhere'")


def test_example_file_exists_for_the_docs():
    assert (ROOT / "docs" / "examples" / "my_blocks.py").is_file()


def test_fp16_op_missing_on_cpu_is_a_usage_error(yb_in, tmp_path):
    f = write(tmp_path, "half.py", """\
        import torch
        from torch import nn

        class HalfHostile(nn.Module):
            def __init__(self, c1):
                super().__init__()

            def forward(self, x):
                if x.dtype == torch.float16:  # what a CPU kernel without a Half implementation raises
                    raise RuntimeError('"slow_conv2d_cpu" not implemented for ' + "'Half'")
                return x
        """)
    code, _, err = yb_in("inspect", f"{f}:HalfHostile", "--size", "8x4x4", "--dtype", "fp16")
    assert code == 2
    line = _one_line(err)
    assert line.startswith("error: --dtype fp16 is not supported on CPU by an op of this block: HalfHostile(8) "
                           "forward on 1x8x4x4 raised RuntimeError: \"slow_conv2d_cpu\" not implemented for 'Half'")
    assert line.endswith("use --dtype fp32 (or bf16), or --device cuda")


def test_threads_must_be_positive(yb_in):
    code, _, err = yb_in("inspect", "C2f", "--size", "64x8x8", "--threads", "0")
    assert code == 2 and _one_line(err) == ("error: yb inspect: Invalid value for '--threads': 0 is not in the "
                                            "range x>=1. (see yb inspect --help)")
