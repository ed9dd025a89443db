"""Trained checkpoints: formats, agreement with the libraries that wrote them, and the safety of reading them.

The fixtures in tests/fixtures/checkpoints/ were written by ultralytics 8.4.190's trainer and by
the YOLOv5 / YOLOv9 repositories' train.py (one epoch on synthetic images; make_checkpoints.py);
reference.json holds what each library computes on them (parameters, the output on a fixed input).
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT, run_yb

CKPTS = FIXTURES / "checkpoints"
REF = json.loads((CKPTS / "reference.json").read_text())
STATE_DICTS = ("tiny-v8-state_dict.pt", "tiny-v8.safetensors")


def fixed_input():
    import torch

    shape = REF["input_shape"]
    n = 1
    for d in shape:
        n *= d
    return (torch.arange(n, dtype=torch.float32).reshape(shape) * 0.618034).remainder(1.0)


@functools.cache
def build(name: str):
    from yoloblocks_cli.loading.yaml_model import build_model

    if name.endswith(".safetensors"):
        pytest.importorskip("safetensors")
    yaml = str(CKPTS / "tiny-v8.yaml") if name in STATE_DICTS else None
    return build_model(str(CKPTS / name), weights_yaml=yaml)


@pytest.mark.parametrize("name", sorted(REF["files"]))
def test_matches_the_library_that_wrote_it(name):
    import torch

    ref = REF["files"][name]
    built = build(name)
    assert {p.dtype for p in built.model.parameters()} == {torch.float32}  # saved as fp16: run as asked
    assert built.params == ref["params"]
    assert len(built.model.state_dict()) == ref["state_dict_keys"]
    with torch.no_grad():
        out = built.model(fixed_input())
    y = out[0] if isinstance(out, (list, tuple)) else out
    assert list(y.shape) == ref["output_shape"]
    expected = torch.tensor(ref["output"]).reshape(ref["output_shape"])
    # the reference is rounded to 6 decimals; float32 carries ~7 significant digits, and a head that
    # orders its sums differently from the library (same maths) moves the last one (1.1e-5 at 38.1)
    assert ((y - expected).abs() <= 2e-6 + 5e-7 * expected.abs()).all()  # 4 float32 ulps
    assert y.double().sum().item() == pytest.approx(ref["output_sum"], rel=1e-7)
    assert y.double().abs().sum().item() == pytest.approx(ref["output_abs_sum"], rel=1e-7)


@pytest.mark.parametrize("name,fmt,key,ema,stripped,epoch,version", [
    ("ultralytics-best.pt", "ultralytics", "model", True, True, -1, "ultralytics 8.4.190"),
    ("ultralytics-epoch.pt", "ultralytics", "ema", True, False, 0, "ultralytics 8.4.190"),
    ("yolov5-best.pt", "yolov5", "model", True, True, -1, "yolov5 git 5081342f04"),
    ("yolov9-best.pt", "yolov9", "ema", True, False, 0, None),
])
def test_what_the_checkpoint_says(name, fmt, key, ema, stripped, epoch, version):
    ref = REF["files"][name]
    info = build(name).checkpoint
    assert (info.format, info.weights_key, info.ema, info.stripped) == (fmt, key, ema, stripped)
    assert (info.epoch, info.version) == (epoch, version) and epoch == ref["epoch"]
    assert info.task == "detect" and info.nc == ref["nc"] == 3
    assert list(info.names) == ref["names"] == ["red", "green", "blue"]
    assert info.imgsz == ref["imgsz"] == 64
    assert info.date == ref["date"]
    assert info.saved_dtype == ref["saved_dtype"] == "float16"
    assert info.model_class == ref["model_class"]
    assert info.yaml_source == "checkpoint"


@pytest.mark.parametrize("name", ["ultralytics-best.pt", "ultralytics-epoch.pt", "yolov5-best.pt", "yolov9-best.pt"])
def test_docs_show_the_current_facts(name):
    """docs/checkpoints.md is rendered by docs/examples/checkpoints/render.py: its facts and figures must not drift."""
    from yoloblocks_cli.reporting.checkpoint_facts import checkpoint_lines

    doc = (ROOT / "docs" / "checkpoints.md").read_text()
    info = {**build(name).checkpoint.as_json(), "path": f"tests/fixtures/checkpoints/{name}"}
    for line in checkpoint_lines(info):
        assert line in doc
    ref = REF["files"][name]
    row = next(r for r in doc.splitlines() if r.startswith(f"| `{name}` |"))
    assert f"| {ref['params']:,} | {'x'.join(map(str, ref['output_shape']))} | {ref['output_sum']:.6f} |" in row


def test_state_dict_facts():
    info = build("tiny-v8-state_dict.pt").checkpoint
    assert (info.format, info.saved_dtype, info.task, info.names) == ("state_dict", "float32", None, None)
    assert info.yaml_source.endswith("tiny-v8.yaml") and info.tensors == REF["files"]["tiny-v8-state_dict.pt"][
        "state_dict_keys"]


def test_trained_weights_reach_the_probes():
    """trace/compare/check build through resolve_target: the module they probe holds the file's tensors."""
    from yoloblocks_cli.loading.checkpoint import read_checkpoint
    from yoloblocks_cli.loading.targets import resolve_target

    path = str(CKPTS / "yolov5-best.pt")
    target = resolve_target(path, "64x96")
    sd = read_checkpoint(path).state_dict
    got = target.module.state_dict()
    assert target.kind == "model" and list(target.shape.dims) == [1, 3, 64, 96]
    assert all((got[k].float() == v.float()).all() for k, v in sd.items())


def test_profile_cli_json():
    r = run_yb("profile", str(CKPTS / "ultralytics-best.pt"), "--size", "64x96", "--dtype", "fp32", "--json",
               "--no-latency", "--no-memory", "--counter", "torch")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    c = rep["checkpoint"]
    assert rep["params"]["total"] == 120_014 and rep["env"]["dtype"] == "fp32"
    assert (c["format"], c["task"], c["nc"], c["names"], c["imgsz"], c["epoch"]) == \
        ("ultralytics", "detect", 3, ["red", "green", "blue"], 64, -1)
    assert (c["ema"], c["saved_dtype"], c["version"], c["tensors"]) == (True, "float16", "ultralytics 8.4.190", 165)
    assert rep["output_shape"] == [1, 7, 120]


# --- bad input: exit 2, one line per difference -----------------------------------------------------


def test_state_dict_with_a_wrong_yaml():
    """Another architecture: shape differences first, then missing and unexpected keys, 40 lines at most."""
    from yoloblocks_cli.errors import UsageError
    from yoloblocks_cli.loading.yaml_model import build_model

    sd, yaml = CKPTS / "tiny-v8-state_dict.pt", CKPTS / "tiny-v5.yaml"
    with pytest.raises(UsageError) as err:
        build_model(str(sd), weights_yaml=str(yaml))
    lines = str(err.value).splitlines()
    assert lines[0] == f"{sd} does not fit {yaml}: 224 differences (strict loading)"
    assert lines[1] == "shape differs: model.0.conv.weight: checkpoint (8, 3, 3, 3), model (16, 3, 6, 6)"
    assert lines[-1] == "... and 184 more" and len(lines) == 42


def cli(capsys, *argv: str) -> tuple[int, str]:
    from yoloblocks_cli.app import main

    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    return exc.value.code, capsys.readouterr().err


def test_wrong_yaml_cli_exit_2(capsys):
    """The right YAML at the wrong class count: every head tensor that depends on nc is one line."""
    sd, yaml = CKPTS / "tiny-v8-state_dict.pt", CKPTS / "tiny-v8.yaml"
    code, err = cli(capsys, "profile", str(sd), "--model", str(yaml), "--nc", "80")
    lines = err.splitlines()
    assert code == 2 and len(lines) == 25
    assert lines[0] == f"error: {sd} does not fit {yaml}: 24 differences (strict loading)"
    assert lines[1] == "shape differs: model.10.cv3.0.0.conv.weight: checkpoint (16, 16, 3, 3), model (80, 16, 3, 3)"
    assert lines[-1] == "shape differs: model.10.cv3.1.2.bias: checkpoint (3,), model (80,)"


def test_state_dict_needs_model(capsys):
    code, err = cli(capsys, "profile", str(CKPTS / "tiny-v8-state_dict.pt"))
    assert code == 2
    assert err.strip().endswith("a plain state_dict carries no architecture: pass --model YAML "
                                "(e.g. --model yolov8n or --model my.yaml)")


def test_scale_does_not_apply_to_a_checkpoint():
    from yoloblocks_cli.errors import UsageError
    from yoloblocks_cli.loading.yaml_model import build_model

    with pytest.raises(UsageError, match="--scale does not apply to .*the YAML stored in the checkpoint fixes it"):
        build_model(str(CKPTS / "ultralytics-best.pt"), scale="s")


def test_truncated_file(tmp_path, capsys):
    from yoloblocks_cli.errors import UsageError
    from yoloblocks_cli.loading.safe_unpickle import safe_load

    data = (CKPTS / "ultralytics-best.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match=r"cut.pt: not a torch checkpoint \(not a zip archive: truncated"):
        safe_load(cut)
    code, err = cli(capsys, "profile", str(cut))
    assert code == 2 and err.count("\n") == 1 and "not a zip archive" in err


def test_storage_shorter_than_declared(tmp_path):
    """A storage entry cut short inside an intact archive: refused before any tensor is made from it."""
    from yoloblocks_cli.errors import UsageError
    from yoloblocks_cli.loading.safe_unpickle import safe_load

    src = zipfile.ZipFile(CKPTS / "yolov5-best.pt")
    bad = tmp_path / "short.pt"
    with zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as out:
        for item in src.infolist():
            raw = src.read(item)
            out.writestr(item.filename, raw[:-2] if item.filename.endswith("/data/0") else raw)
    with pytest.raises(UsageError, match=r"short.pt: damaged checkpoint: storage 0: \d+ bytes, but \d+ x 2 declared"):
        safe_load(bad)


def test_a_view_outside_its_storage(tmp_path):
    import torch

    from yoloblocks_cli.errors import UsageError
    from yoloblocks_cli.loading.safe_unpickle import safe_load

    t = torch.arange(10.0)
    torch.save({"w": t[2:]}, tmp_path / "v.pt")
    assert torch.equal(safe_load(tmp_path / "v.pt").obj["w"], t[2:])
    # rewrite the pickle so that the view starts past the end (offset 2 -> 9 with 8 elements)
    zf = zipfile.ZipFile(tmp_path / "v.pt")
    names = zf.namelist()
    pkl = next(n for n in names if n.endswith("data.pkl"))
    raw = zf.read(pkl)
    assert raw.count(b"K\x02") == 1  # BININT1 2: the storage offset
    with zipfile.ZipFile(tmp_path / "bad.pt", "w") as out:
        for n in names:
            out.writestr(n, raw.replace(b"K\x02", b"K\x09") if n == pkl else zf.read(n))
    with pytest.raises(UsageError, match="damaged checkpoint: tensor view reaches element 16 of a storage of 10"):
        safe_load(tmp_path / "bad.pt")


def test_safetensors_needs_model_and_loads():
    pytest.importorskip("safetensors")
    built = build("tiny-v8.safetensors")
    assert built.checkpoint.format == "safetensors" and built.params == 120_014


# --- hostile files: nothing runs, nothing is imported --------------------------------------------

HOSTILE = textwrap.dedent("""
    import os, subprocess, sys, types, torch
    marker = sys.argv[1]

    class System:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class Eval:
        def __reduce__(self):
            return (eval, (f"open({marker!r}, 'w').write('eval')",))

    class Popen:
        def __reduce__(self):
            return (subprocess.Popen, (["touch", marker],))

    # a function of an allowed package (lower-case name): refused, although its package is allowed
    fake = types.ModuleType("ultralytics.utils.downloads")
    def attempt_download_asset(cmd):
        open(marker, "w").write("download")
    attempt_download_asset.__module__ = fake.__name__
    fake.attempt_download_asset = attempt_download_asset
    for name in ("ultralytics", "ultralytics.utils", "ultralytics.utils.downloads"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["ultralytics.utils.downloads"] = fake

    class Download:
        def __reduce__(self):
            return (attempt_download_asset, ("x",))

    w = torch.ones(2)
    out = sys.argv[2]
    torch.save({"model": System()}, f"{out}/system.pt")
    torch.save({"model": None, "ema": {"weight": w, "cb": [1, {"x": Eval()}]}}, f"{out}/eval.pt")
    torch.save({"epoch": 3, "optimizer": Popen()}, f"{out}/popen.pt")
    torch.save({"model": Download(), "train_args": {}}, f"{out}/download.pt")
""")

PROBE = textwrap.dedent("""
    import json, sys
    import torch
    import yoloblocks_cli.loading.checkpoint as ck
    before = set(sys.modules)
    results = {}
    for name in sys.argv[1:]:
        try:
            ck.read_checkpoint(name)
            results[name] = "loaded"
        except Exception as exc:
            results[name] = f"{type(exc).__name__}: {exc}"
    new = sorted(m for m in set(sys.modules) - before)
    print(json.dumps({"results": results, "new_modules": new}))
""")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Four hostile checkpoints written by torch.save in a separate process; the marker is what they would touch."""
    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "pwned"
    subprocess.run([sys.executable, "-c", HOSTILE, str(marker), str(folder)], check=True, cwd=folder)
    return folder, marker


def test_hostile_pickles_leave_no_trace(hostile):
    tmp_path, marker = hostile
    files = {p.name for p in tmp_path.iterdir()}
    assert files == {"system.pt", "eval.pt", "popen.pt", "download.pt"}
    paths = [str(tmp_path / f) for f in ("system.pt", "eval.pt", "popen.pt", "download.pt")]
    r = subprocess.run([sys.executable, "-c", PROBE, *paths], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    refused = {Path(k).name: v for k, v in report["results"].items()}
    for name, glob in (("system.pt", "posix.system"), ("eval.pt", "builtins.eval"),
                       ("popen.pt", "subprocess.Popen"), ("download.pt", "ultralytics.utils.downloads."
                                                                         "attempt_download_asset")):
        assert refused[name].startswith("UnsafeGlobal: ") and f"asks for '{glob}'" in refused[name], refused[name]
    # nothing named in the files was imported, and nothing ran
    assert not [m for m in report["new_modules"] if m.split(".")[0] in ("ultralytics", "subprocess", "models")]
    assert not marker.exists()
    assert {p.name for p in tmp_path.iterdir()} == files


def test_hostile_cli_exit_2(hostile, capsys):
    tmp_path, marker = hostile
    code, err = cli(capsys, "profile", str(tmp_path / "system.pt"))
    assert code == 2 and "Traceback" not in err
    assert err.strip() == (f"error: {tmp_path / 'system.pt'}: refused to load: the pickle asks for 'posix.system', "
                                "which is not a tensor, a plain container or a model class (nothing in the file "
                                "was run)")
    assert not marker.exists()


def test_model_classes_are_inert_records():
    """An allowed model class called by the pickle with arguments becomes a record: nothing of it runs."""
    import io

    from yoloblocks_cli.loading.safe_unpickle import Record, SafeUnpickler, UnsafeGlobal

    payload = (b"\x80\x02cultralytics.nn.tasks\nDetectionModel\nq\x00X\x08\x00\x00\x00rm -rf /q\x01\x85q\x02Rq\x03.")
    obj = SafeUnpickler(io.BytesIO(payload), lambda *a: None, "inline").load()
    assert isinstance(obj, Record) and obj.global_name == "ultralytics.nn.tasks.DetectionModel"
    assert obj._yb_args == ("rm -rf /",)
    with pytest.raises(UnsafeGlobal, match=f"inline: refused to load: the pickle asks for '{os.system.__module__}.system'"):
        SafeUnpickler(io.BytesIO(pickle.dumps(os.system, protocol=2)), lambda *a: None, "inline").load()


def test_build_only_on_records():
    """BUILD would call an object's own __setstate__ (a tensor's, say): yb allows it on records only."""
    import io

    from yoloblocks_cli.loading.safe_unpickle import SafeUnpickler

    payload = b"\x80\x02cbuiltins\nobject\n)\x81}X\x01\x00\x00\x00aK\x01sb."
    with pytest.raises(pickle.UnpicklingError, match="BUILD on a object is not allowed"):
        SafeUnpickler(io.BytesIO(payload), lambda *a: None, "inline").load()
