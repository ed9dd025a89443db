"""`yb scale` as a user runs it: JSON contract, figures, terminal chart, errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, _env

FAST = ("--metrics", "flops", "--channels", "16")


@pytest.fixture
def yb(capsys, monkeypatch):
    """Run `yb` in this process (torch is imported once for the file, not per test); returns
    a CompletedProcess-like object. Same argv handling and error rendering as the console script."""
    from yoloblocks_cli.app import main

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["yb", *args], code, out, err)

    return run


def _json(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_json_report_has_points_and_one_fit_per_target_and_metric(yb):
    # memory costs a gc pass per size: a shorter sweep keeps this test quick
    report = _json(yb("scale", "Conv", "C2f", "--metrics", "flops,memory", "--channels", "16", "--json",
                      "--sizes", "8,8x16,16,16x32"))
    assert report["schema"] == "yoloblocks.report/1"
    assert report["command"] == "scale"
    assert report["target"] == "Conv, C2f"
    assert set(report["env"]) >= {"torch", "device", "device_name", "dtype", "threads", "yoloblocks"}
    assert report["env"]["device"] == "cpu"
    assert report["metrics"] == ["flops", "memory"]
    assert report["sizes"] == [[8, 8], [8, 16], [16, 16], [16, 32]]
    assert [t["target"] for t in report["targets"]] == ["Conv", "C2f"]
    conv = report["targets"][0]
    assert conv["call"] == "Conv(16, 16)"
    assert conv["points"][1] == {"height": 8, "width": 16, "tokens": 128, "ok": True, "flops": 2 * 16 * 16 * 128,
                                 "memory_bytes": 2 * 16 * 128 * 4,
                                 "memory_method": conv["points"][1]["memory_method"]}
    assert [(f["target"], f["metric"]) for f in report["fits"]] == [
        ("Conv", "flops"), ("Conv", "memory"), ("C2f", "flops"), ("C2f", "memory")]
    for fit in report["fits"]:
        assert abs(fit["slope"] - 1.0) < 1e-9 and fit["r2"] == 1.0 and fit["stderr"] == 0.0
        assert len(fit["local_slopes"]) == 3 and fit["tail_slope"] == pytest.approx(1.0, abs=1e-9)
        assert "poly" not in fit  # standard convolutions get no attention decomposition
    assert report["fits"][0]["verdict"] == "FLOPs grow as N^1.00: linear"
    assert report["failed"] == 0


def test_attention_like_block_from_a_file_gets_the_polynomial_fit(yb, tmp_path):
    src = tmp_path / "attn.py"
    src.write_text(
        "import torch.nn as nn\n"
        "class Attn(nn.Module):\n"
        "    def __init__(self, c):\n"
        "        super().__init__()\n"
        "        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=False)\n"
        "    def forward(self, x):\n"
        "        b, c, h, w = x.shape\n"
        "        q, k, v = self.qkv(x).flatten(2).chunk(3, dim=1)\n"
        "        a = (q.transpose(1, 2) @ k).softmax(-1)\n"
        "        return (v @ a.transpose(1, 2)).view(b, c, h, w)\n")
    report = _json(yb("scale", f"{src}:Attn", *FAST, "--sizes", "8,8x16,16,16x32,32", "--json"))
    fit = report["fits"][0]
    c = 16
    assert [p["flops"] for p in report["targets"][0]["points"]] == [
        6 * c * c * n + 4 * c * n * n for n in (64, 128, 256, 512, 1024)]
    assert fit["poly"]["c0"] == 0.0
    assert fit["poly"]["c1"] == pytest.approx(6 * c * c, rel=1e-8)
    assert fit["poly"]["c2"] == pytest.approx(4 * c, rel=1e-9)
    assert fit["poly"]["crossover_tokens"] == pytest.approx(1.5 * c, rel=1e-8)


def test_terminal_output_has_tables_chart_and_verdicts(yb):
    result = yb("scale", "Conv", *FAST, "--ascii")
    assert result.returncode == 0, result.stderr
    report = _json(yb("scale", "Conv", *FAST, "--json"))
    assert report["sizes"] == [[8, 8], [8, 16], [16, 16], [16, 32], [32, 32], [32, 64], [64, 64]]
    out = result.stdout
    assert "cost vs tokens N = H×W (blocks at C=16, batch 1, cpu)" in out
    assert "o Conv  slope 1.00" in out  # the ASCII chart's legend
    assert "N (log), flops (log)" in out
    assert "FLOPs grow as N^1.00: linear" in out
    assert "64x64 │ 4096 │  2.1M" in out


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG\r\n\x1a\n"), (".svg", b"<?xml")])
def test_plot_writes_a_figure(yb, tmp_path, suffix, magic):
    pytest.importorskip("matplotlib")
    out = tmp_path / f"scale{suffix}"
    result = yb("scale", "Conv", "C2f", *FAST, "--plot", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(magic)
    assert f"wrote {out}" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    if suffix == ".svg":
        text = out.read_text()
        assert "Conv: N^1.00 (R² 1.000)" in text and "tokens N = H × W" in text


def test_plot_with_unknown_extension_is_a_usage_error(yb, tmp_path):
    result = yb("scale", "Conv", *FAST, "--plot", str(tmp_path / "scale.txt"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: cannot write figure '{tmp_path / 'scale.txt'}': the name must end in .png, .svg or .pdf"


def test_plot_without_matplotlib_is_one_clear_line(tmp_path):
    fake = tmp_path / "fake" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    env = _env()
    env["PYTHONPATH"] = str(tmp_path / "fake") + os.pathsep + env["PYTHONPATH"]
    result = subprocess.run([sys.executable, "-m", "yoloblocks_cli", "scale", "Conv", *FAST, "--plot",
                             str(tmp_path / "s.png")], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --plot needs matplotlib, which is not installed: pip install 'yoloblocks[plot]'"


@pytest.mark.parametrize("args, message", [
    (("Conv", "--metrics", "flops,speed"), "error: unknown metric 'speed': choose from flops, latency, memory"),
    (("Conv", "--sizes", "16x32,32x16"), "error: --sizes needs at least two different token counts (H*W) to fit a slope"),
    (("Conv", "--sizes", "8,16x"), "error: malformed size '16x': expected digits joined by 'x', e.g. 64x160x160"),
    (("Conv", "--channels", "0"), "error: --channels must be positive, got 0"),
    (("Convv",), "error: unknown block 'Convv' (did you mean: Conv, "),  # the rest grows with the registry
])
def test_bad_input_is_one_line_and_exit_2(yb, args, message):
    result = yb("scale", *args)
    assert result.returncode == 2
    err = result.stderr.strip()
    assert err == message or (message.endswith(", ") and err.startswith(message) and "\n" not in err)


def test_block_failing_at_non_square_sizes_exits_1_after_reporting(yb, tmp_path):
    src = tmp_path / "square.py"
    src.write_text(
        "import math\n"
        "import torch.nn as nn\n"
        "class SquareOnly(nn.Module):\n"
        "    def __init__(self, c):\n"
        "        super().__init__()\n"
        "        self.proj = nn.Conv2d(c, c, 1)\n"
        "    def forward(self, x):\n"
        "        b, c, h, w = x.shape\n"
        "        n = math.isqrt(h * w)\n"
        "        return self.proj(x.flatten(2).view(b, c, n, n))\n")
    out = tmp_path / "r.json"
    result = yb("scale", f"{src}:SquareOnly", *FAST, "--output", str(out))
    assert result.returncode == 1
    assert result.stderr.strip().startswith(
        "error: SquareOnly failed at 8x16: RuntimeError: shape '[1, 16, 11, 11]' is invalid")
    assert result.stderr.strip().endswith("(and 2 more)")
    report = json.loads(out.read_text())
    assert report["failed"] == 3
    assert [p["ok"] for p in report["targets"][0]["points"]] == [True, False, True, False, True, False, True]
    assert abs(report["fits"][0]["slope"] - 1.0) < 1e-9 and report["fits"][0]["points"] == 4


def test_model_target_without_a_builder_or_with_one(yb):
    from yoloblocks_cli.measuring import scaling

    try:
        import yoloblocks_cli.loading.yaml_model  # noqa: F401
    except ModuleNotFoundError:
        result = yb("scale", "yolov8n.yaml", "--metrics", "flops")
        assert result.returncode == 2
        assert result.stderr.strip() == \
            "error: cannot scale model 'yolov8n.yaml': the YAML model builder is not part of this build"
        return
    assert scaling.is_model_target("yolov8n.yaml")
    report = _json(yb("scale", "yolov8n", "--metrics", "flops", "--sizes", "128,128x256,256,256x512", "--json"))
    assert report["targets"][0]["kind"] == "model"
    fit = report["fits"][0]
    assert abs(fit["slope"] - 1.0) < 1e-6 and fit["verdict"] == "FLOPs grow as N^1.00: linear"


@pytest.mark.cuda
@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA device")
def test_cuda_sweep_measures_all_metrics(yb):
    report = _json(yb("scale", "Conv", "--channels", "16", "--device", "cuda", "--json", "--time-per-size", "0.1"))
    assert report["env"]["device"].startswith("cuda")
    point = report["targets"][0]["points"][-1]
    assert point["flops"] == 2 * 16 * 16 * 4096 and point["latency_ms"] > 0 and point["memory_bytes"] > 0
    assert abs(report["fits"][0]["slope"] - 1.0) < 1e-9


def test_model_targets_use_the_yaml_builder_contract(yb, monkeypatch, tmp_path):
    """Against a stand-in ``yoloblocks_cli.loading.yaml_model`` with the agreed interface: a model
    target is a .yaml file or a shipped short name, fed 3-channel images at each size."""
    import types

    import torch.nn as nn

    calls = []

    def resolve_model_path(name):
        if name != "tinynet":
            raise FileNotFoundError(name)
        return tmp_path / "tinynet.yaml"

    def build_model(path_or_name, scale=None, plugins=(), nc=None):
        calls.append(path_or_name)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.Conv2d(8, 8, 3, 2, 1, bias=False))
        return types.SimpleNamespace(model=net, layers=[], stride=[4])

    fake = types.ModuleType("yoloblocks_cli.loading.yaml_model")
    fake.resolve_model_path, fake.build_model = resolve_model_path, build_model
    monkeypatch.setitem(sys.modules, "yoloblocks_cli.loading.yaml_model", fake)

    from yoloblocks_cli.measuring import scaling

    assert scaling.is_model_target("tinynet") and scaling.is_model_target("my/net.yaml")
    assert not scaling.is_model_target("Conv") and not scaling.is_model_target("nope")
    report = _json(yb("scale", "tinynet", "--metrics", "flops", "--json"))
    assert calls == ["tinynet"]
    assert report["targets"][0]["kind"] == "model" and report["channels"] == 3
    assert report["sizes"] == [[128, 128], [128, 256], [256, 256], [256, 512], [512, 512], [512, 1024]]
    # two stride-2 3x3 convs: 2*3*8*9 MACs per output pixel at H/2, 2*8*8*9 at H/4
    assert [p["flops"] for p in report["targets"][0]["points"]] == [
        2 * (3 * 8 * 9 * (h // 2) * (w // 2) + 8 * 8 * 9 * (h // 4) * (w // 4)) for h, w in report["sizes"]]
    assert abs(report["fits"][0]["slope"] - 1.0) < 1e-9
    result = yb("scale", "tinynet", "Conv", "--metrics", "flops")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: cannot scale blocks and models in one call: their inputs differ (C channels vs images)"


def test_scale_help_does_not_import_torch():
    code = ("import sys\nfrom yoloblocks_cli.app import main\ntry:\n    main(['scale', '--help'])\n"
            "except SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=_env())
    assert "--channels" in result.stdout and "--plot" in result.stdout
    assert result.stdout.strip().endswith("NO-TORCH")
