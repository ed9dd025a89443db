"""JUnit XML for CI: one <testcase> per check, readable by GitLab, Jenkins and GitHub reporters.

Commands build :class:`Case` objects and call :func:`write_junit`; nothing here knows
about blocks or probes, so every command can reuse it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


@dataclass
class Case:
    """One test case: ``status`` is "pass", "fail", "error" or "skip"."""

    classname: str
    name: str
    status: str = "pass"
    message: str = ""  # one line, shown by CI summaries
    details: str = ""  # the body of <failure>/<skipped>
    error_type: str = ""
    seconds: float = 0.0


def to_xml(suite: str, cases: Iterable[Case], properties: dict[str, str] | None = None) -> ET.Element:
    cases = list(cases)
    root = ET.Element("testsuites")
    ts = ET.SubElement(root, "testsuite", {
        "name": suite,
        "tests": str(len(cases)),
        "failures": str(sum(c.status == "fail" for c in cases)),
        "errors": str(sum(c.status == "error" for c in cases)),
        "skipped": str(sum(c.status == "skip" for c in cases)),
        "time": f"{sum(c.seconds for c in cases):.4f}",
    })
    if properties:  # e.g. partial="true" for a run cut short by Ctrl-C or SIGTERM
        props = ET.SubElement(ts, "properties")
        for k, v in properties.items():
            ET.SubElement(props, "property", {"name": k, "value": v})
    for c in cases:
        tc = ET.SubElement(ts, "testcase", {"classname": c.classname, "name": c.name, "time": f"{c.seconds:.4f}"})
        if c.status in ("fail", "error"):
            el = ET.SubElement(tc, "failure" if c.status == "fail" else "error",
                               {"message": c.message, "type": c.error_type or c.status})
            el.text = c.details or c.message
        elif c.status == "skip":
            ET.SubElement(tc, "skipped", {"message": c.message})
    root.set("tests", ts.get("tests", "0"))
    root.set("failures", ts.get("failures", "0"))
    return root


def write_junit(path: str | Path, suite: str, cases: Iterable[Case], properties: dict[str, str] | None = None) -> Path:
    """Write the XML file (parents created); returns the path."""
    from yoloblocks_cli.reporting.atomic import atomic_path

    p = Path(path)
    tree = ET.ElementTree(to_xml(suite, cases, properties))
    ET.indent(tree)
    with atomic_path(p) as tmp:  # parents created (and said so); a FIFO or device written in place
        tree.write(tmp, encoding="utf-8", xml_declaration=True)
    return p
