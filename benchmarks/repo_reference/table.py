"""Build every repository YAML of the reference fixture with yb and write the comparison table.

usage: python benchmarks/repo_reference/table.py [--render-only] [KEY ...]

yb's figures are cached in benchmarks/repo_reference/yb_results.json (one build per YAML, slow);
the table goes into docs/dialects.md between the repo-table markers.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "repo_yamls_reference.json"
CACHE = Path(__file__).with_name("yb_results.json")
DOC = ROOT / "docs" / "dialects.md"
START, END = "<!-- repo-table:start -->", "<!-- repo-table:end -->"


def deploy_form(ref: dict, key: str) -> str:
    """A YOLOv7 training YAML's deploy form is its twin under deploy/ (see tests/test_repo_yamls.py)."""
    folder, _, stem = key.partition("/")
    twin = f"{folder}/deploy/{stem}"
    return twin if folder == "yolov7_repo" and "/" not in stem and "fused" in ref.get(twin, {}) else key


def measure_fused(key: str) -> dict:
    from yoloblocks_cli.loading.fuse import fuse_built
    from yoloblocks_cli.loading.yaml_model import build_model, ultralytics_gflops

    built = build_model(key)
    fuse_built(built)
    try:
        gflops = round(ultralytics_gflops(built), 6)
    except Exception:  # noqa: BLE001 - thop raises on ReOrg models, inside the repositories too
        gflops = None
    return {"params": built.params, "gradients": built.gradients, "modules": built.n_layers, "gflops": gflops}


def measure(key: str) -> dict:
    from yoloblocks_cli.loading.yaml_model import build_model, ultralytics_gflops

    t = time.time()
    built = build_model(key)
    try:
        gflops = round(ultralytics_gflops(built), 6)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        gflops = None
        print(f"{key}: thop failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return {"params": built.params, "gradients": built.gradients, "modules": built.n_layers, "gflops": gflops,
            "dialect": built.dialect, "seconds": round(time.time() - t, 1)}


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _fused_cell(ref: dict, key: str, y: dict) -> str:
    """'exact (36,905,341 params, 306 modules)' against the repository's fused deploy form, when measured."""
    form = deploy_form(ref, key)
    want, got = ref[form].get("fused"), y.get("fused")
    if want is None or got is None:
        return ""
    same = (got["params"], got["gradients"], got["modules"]) == (want["params"], want["gradients"], want["modules"])
    if want.get("gflops") is not None:
        same = same and abs(got["gflops"] - want["gflops"]) < 1e-3
    via = "" if form == key else f" = fused `{form.split('/', 1)[1]}`"
    return (f"{'exact' if same else '**differs**'}{via} ({want['params']:,} params, {want['modules']} modules)"
            + ("" if same else f"; yb {got['params']:,} params, {got['modules']} modules"))


def render(ref: dict, yb: dict) -> str:
    rows = ["| YAML | reference params | modules | GFLOPs | yb params | modules | GFLOPs | exact "
            "| `--fuse` (deploy form) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    shipped = sorted(p.relative_to(ROOT / "blocks" / "cfg").with_suffix("").as_posix()
                     for folder in ("yolov5_repo", "yolov7_repo", "yolov9_repo")
                     for p in (ROOT / "blocks" / "cfg" / folder).rglob("*.yaml"))
    for key in shipped:
        if key not in ref:
            rows.append(f"| `{key}` | not measured | | | | | | | |")
            continue
        r, y = ref[key], yb.get(key)
        if y is None:
            rows.append(f"| `{key}` | {r['params']:,} | {r['modules']} | {_g(r.get('gflops'))} | not built | | | | |")
            continue
        same = (y["params"], y["gradients"], y["modules"]) == (r["params"], r["gradients"], r["modules"])
        if r.get("gflops") is not None:
            # the reference is stored to 4-6 decimals: to 0.001, not by rounding twice (206.314496 vs 206.3145)
            same = same and y["gflops"] is not None and abs(y["gflops"] - r["gflops"]) < 1e-3
        rows.append(f"| `{key}` | {r['params']:,} | {r['modules']} | {_g(r.get('gflops'))} | {y['params']:,} | "
                    f"{y['modules']} | {_g(y['gflops'])} | {'yes' if same else '**no**'} | "
                    f"{_fused_cell(ref, key, y)} |")
    return "\n".join(rows)


def main(argv: list[str]) -> None:
    ref = json.loads(FIXTURE.read_text())["models"]
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    if "--render-only" not in argv:
        for key in [a for a in argv if not a.startswith("--")] or list(ref):
            if key in cache and ("fused" in cache[key] or "fused" not in ref[deploy_form(ref, key)]):
                continue
            if key not in cache:
                cache[key] = measure(key)
            if "fused" in ref[deploy_form(ref, key)]:
                cache[key]["fused"] = measure_fused(key)
            print(key, cache[key], flush=True)
            CACHE.write_text(json.dumps(dict(sorted(cache.items())), indent=1) + "\n")
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{render(ref, cache)}\n{END}{tail}")


if __name__ == "__main__":
    main(sys.argv[1:])
