"""Keeps docs/byob.md honest: its broken example fails where the guide says, the fix passes,
and the example YAML builds with the plugin to the parameter count pasted in the guide.
Each check runs in a subprocess because the fixed example registers `MyBlock` on import,
which must not leak into the registry other tests (e.g. the catalog) see."""
import subprocess
import sys

from conftest import ROOT, _env, run_yb

EX = "docs/examples/byob"


def test_broken_block_fails_non_square_with_square_hint():
    r = run_yb("trace", f"{EX}/my_blocks.py:MyBlock", "--sizes", "64x20x20,64x20x15", "--batch", "1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "RuntimeError at layer <root> (MyBlock) input 1x64x20x15" in r.stdout
    assert f"{EX}/my_blocks.py:23" in r.stdout
    assert "hint: assumes a square input: reshapes 300 (20x15) tokens to 17x17" in r.stdout
    assert "1 passed, 1 failed" in r.stdout


def test_fixed_block_passes_non_square():
    r = run_yb("trace", f"{EX}/my_blocks_fixed.py:MyBlock", "--sizes", "64x20x15,64x21x14", "--batch", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed, 0 failed" in r.stdout


def test_example_yaml_builds_with_plugin_exact_params():
    code = (
        "from yoloblocks_cli.loading.yaml_model import build_model\n"
        f"b = build_model('{EX}/yolov8n-myblock.yaml', plugins=['{EX}/my_blocks_fixed.py'])\n"
        "print(sum(p.numel() for p in b.model.parameters()))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT, env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3420368"]  # docs/byob.md: "3,420,368 parameters"
