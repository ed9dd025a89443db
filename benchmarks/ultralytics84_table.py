"""Regenerate the comparison table of docs/models.md: ultralytics 8.4.190's figures against yb's build.

Reads ``tests/fixtures/ultralytics84_reference.json`` (measured with ultralytics itself in a
separate environment), builds every case with yb (no ultralytics), and rewrites the part of
docs/models.md between the ``<!-- table -->`` markers. yb's figures are kept in
``benchmarks/ultralytics84_yb.json``; a case already there is not rebuilt unless ``--rebuild``.
Usage: ``python benchmarks/ultralytics84_table.py [--rebuild]`` (every case: about 20 minutes on 2 cores).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "ultralytics84_reference.json"
DOC = ROOT / "docs" / "models.md"
CACHE = ROOT / "benchmarks" / "ultralytics84_yb.json"
BEGIN, END = "<!-- table -->", "<!-- /table -->"


def task_of(d: dict) -> str:
    """ultralytics' guess_model_task on the YAML's last head module (RT-DETR's decoder counts as detect)."""
    m = str(d["head"][-1][2]).lower()
    for key, task in (("classify", "classify"), ("detect", "detect"), ("semanticsegment", "semantic"),
                      ("segment", "segment"), ("pose", "pose"), ("obb", "obb"), ("depth", "depth"),
                      ("rtdetr", "detect")):
        if key in m:
            return task
    return "detect"


def existing_cases() -> dict[str, str]:
    """'stem:scale' -> task for every YAML x scale ultralytics 8.4.190 ships (as copied into blocks/cfg/ultralytics)."""
    out = {}
    for p in sorted((ROOT / "blocks" / "cfg" / "ultralytics").glob("*.yaml")):
        d = yaml.safe_load(p.read_text())
        for s in list(d.get("scales") or {}) or ["-"]:
            out[f"{p.stem}:{s}"] = task_of(d)
    return out


def yb_figures(key: str, fused: bool) -> dict | str:
    from yoloblocks_cli.loading.fuse import fuse_built
    from yoloblocks_cli.loading.yaml_model import build_model, ultralytics_gflops

    stem, scale = key.split(":")
    try:
        built = build_model(stem, scale=None if scale == "-" else scale)
        if fused:
            fuse_built(built)
        return {"params": built.params, "gradients": built.gradients, "layers": built.n_layers,
                "gflops": ultralytics_gflops(built)}
    except Exception as exc:  # noqa: BLE001 - reported in the table
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"


def exact(ref: dict, yb: dict | str) -> bool:
    return isinstance(yb, dict) and all(ref[k] == yb[k] for k in ("params", "gradients", "layers")) \
        and abs(ref["gflops"] - yb["gflops"]) <= 1e-3


def fmt(f: dict | str) -> str:
    if isinstance(f, str):
        return f"fails: `{f}`"
    return f"{f['params']:,} / {f['gradients']:,} / {f['layers']} / {f['gflops']:.3f}"


def main(argv: list[str]) -> int:
    ref = json.loads(FIXTURE.read_text())["models"]
    cache = {} if "--rebuild" in argv or not CACHE.exists() else json.loads(CACHE.read_text())
    cases = existing_cases()
    rows, exact_by_task, measured_by_task = [], Counter(), Counter()
    fused_exact, fused_measured = Counter(), Counter()
    for key in sorted(ref):
        r = ref[key]
        task = cases.get(key, r.get("task", "detect"))
        mine = cache.setdefault(key, {})
        if "base" not in mine:
            mine["base"] = yb_figures(key, False)
        if "fused" in r and "fused" not in mine:
            mine["fused"] = yb_figures(key, True)
        CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
        ok = exact(r, mine["base"])
        measured_by_task[task] += 1
        exact_by_task[task] += ok
        fused = ""
        if "fused" in r:
            f_ok = exact(r["fused"], mine["fused"])
            fused_measured[task] += 1
            fused_exact[task] += f_ok
            fused = "exact" if f_ok else f"ref {fmt(r['fused'])}, yb {fmt(mine['fused'])}"
        rows.append(f"| {r['yaml'].split('/')[-1]} | {key.split(':')[1]} | {task} | {fmt(r)} | {fmt(mine['base'])} | "
                    f"{'yes' if ok else '**no**'} | {fused} |")
        print(key, "exact" if ok else "DIFFERS", file=sys.stderr)
    total = Counter(cases.values())
    summary = ["| task | YAML x scale cases shipped | measured with ultralytics | yb exact | fused measured | "
               "fused exact |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for task in sorted(total):
        summary.append(f"| {task} | {total[task]} | {measured_by_task[task]} | {exact_by_task[task]} | "
                       f"{fused_measured[task]} | {fused_exact[task]} |")
    summary.append(f"| all | {sum(total.values())} | {sum(measured_by_task.values())} | "
                   f"{sum(exact_by_task.values())} | {sum(fused_measured.values())} | {sum(fused_exact.values())} |")
    table = ["| YAML | scale | task | ultralytics 8.4.190: params / gradients / layers / GFLOPs | yb | exact | fused |",
             "| --- | --- | --- | --- | --- | --- | --- |", *rows]
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(head + BEGIN + "\n" + "\n".join(summary) + "\n\n" + "\n".join(table) + "\n" + END + tail)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
