"""The project's own CI smoke check: `yb check` with the repository's yb.toml passes."""

from __future__ import annotations

import json

from conftest import ROOT, run_yb


def test_project_yb_check_passes():
    proc = run_yb("check", "--json", "--junit", str(ROOT / ".pytest_cache" / "yb-check-junit.xml"), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["command"] == "check" and report["ok"] and report["failed"] == 0
    names = [t["name"] for t in report["targets"]]
    assert names[:2] == ["c2f", "sppf"]
    params = {t["name"]: t["params"]["total"] for t in report["targets"]}
    assert params["c2f"] == 29_056 and params["sppf"] == 10_432
    assert params["yolov8n"] == 3_157_200  # ultralytics' count for yolov8n.yaml
    checks = {(c["target"], c["check"]) for c in report["checks"]}
    assert ("c2f", "sweep 2x64x48x32") in checks and ("c2f", "baseline params") in checks
