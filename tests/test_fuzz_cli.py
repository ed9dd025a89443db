"""A fixed, seeded fuzz corpus through the CLI, in-process (issue 16, bullet 5).

Every command line is made from fragments (sizes, --args, --kwargs, counters, dtypes,
devices, batch, YAML fragments) by a ``random.Random`` with a fixed seed, so the corpus is
the same on every run and a failure names its command line. For each: the exit code is 0,
1 (the block failed) or 2 (bad input); a non-zero exit prints exactly one line on stderr;
nothing prints "internal error", a Python traceback or PyTorch's C++ frames.
"""

from __future__ import annotations

import random
import re

import pytest

from yoloblocks_cli.app import main
from yoloblocks_cli.loading import limits

SEED = 16

SIZES = ["3x8x8", "2x3x8x8", "8x6x10", "3x8", "3x0x8", "x", "", "-3x8x8", "3x8x8x8x8", "3×8×8", "1e3x8x8",
         "3x8x" + "9" * 12, "3x8x" + "7" * 400, "3x65536x65536", "99999999x8x8", "3,,3x8x8", "3x8x8,3x9x9", "３x8x8"]
ARGS = [None, "[8, 3, 2]", "[8]", "[0, 3, 2]", "[-8, 3]", "[8, 3, 2", "__import__('os').system('true')",
        "[" * 150 + "]" * 150, "1+" * 3000 + "1", "{'a': 1}", "['a', 'b']", "[1e400]", "[8, 3, 1, None, 1, 1]",
        "[float('nan')]", "(8,)", "[True]", "[2**64]", "'x' * 10"]
KWARGS = [None, "k=1", "act=True", "act=False", "=1", "1x=2", "act=[", "g=0", "bogus=3", "d=" + "[" * 200]
COUNTERS = [None, "torch", "fvcore", "ultralytics", "nope", ",", "torch,torch", "THOP"]
DTYPES = [None, "fp32", "fp16", "bf16", "int8", "fp8", "", "float64"]
DEVICES = [None, "cpu", "cuda", "cuda:99", "tpu", "cpu:0", "meta", "cuda:-1", ""]
BATCHES = [None, "1", "2", "0", "-1", "abc", "99999999999999999999"]
BLOCKS = ["Conv", "Conv", "C2f", "nosuch", "os:getcwd", "subprocess:Popen", "torch.nn:Conv2d", "torch.nn:ReLU",
          "a:b:c", ":", "blocks.conv:Conv"]

ROWS = ["[-1, 1, Conv, [16, 3, 2]]", "[-1, 3, C2f, [16, True]]", "[-1, 1, nn.Upsample, [None, 2, 'nearest']]",
        "[-2, 1, Conv, [8, 1, 1]]", "[5, 1, Conv, [8, 1, 1]]", "[-1, 1000000000, Conv, [8, 1, 1]]",
        "[-1, 1, Conv, [0, 3, 2]]", "[-1, 1, Conv]", "[-1, 1, 7, [8]]", "[-1, 1, Nope, [8]]", "[[-1, -1], 1, Concat, [1]]",
        "[-1, -3, Conv, [8, 1, 1]]", "[-1, 1, Conv, [8, 3, 1, 1, 1, 1, 1, 1, 1]]", "[-1, 1, Conv, ['x']]",
        "7", "[-1, 1, Conv, [1000000, 3, 2]]", "[-1, 1, SPPF, [16, 5]]", "[-1, 1, Conv, [16, 3, 2, *a]]"]
HEADERS = ["", "nc: 80", "nc: three", "nc: -1", "depth_multiple: deep", "width_multiple: .inf",
           "width_multiple: 1.0e+6", "depth_multiple: 1.0e+9", "channels: three", "channels: 0",
           "activation: nn.ReLU()", "activation: os.system('true')", "scales: {n: [0.33, 0.25, 1024]}",
           "scales: [1, 2]", "scales: {n: [0.33]}", "a: &a [1, 2]", "kpt_shape: [17, 3]", "backbone: 3"]


BASE = {"block": "Conv", "--size": "3x8x8", "--args": "[8, 3, 2]", "--kwargs": None, "--counter": "torch",
        "--dtype": None, "--device": None, "--batch": None}
POOLS = {"block": BLOCKS, "--size": SIZES, "--args": ARGS, "--kwargs": KWARGS, "--counter": COUNTERS,
         "--dtype": DTYPES, "--device": DEVICES, "--batch": BATCHES}
BASE_YAML = {"header": "nc: 80", "row": "[-1, 1, Conv, [16, 3, 2]]"}


def _argv(choice: dict) -> list[str]:
    argv = ["inspect", str(choice["block"]), "--no-latency", "--no-memory"]
    for flag in POOLS:
        if flag != "block" and choice[flag] is not None:
            argv += [flag, str(choice[flag])]
    return argv


def _doc(header: str, rows: list[str]) -> str:
    return f"{header}\nbackbone:\n" + "".join(f"  - {r}\n" for r in rows) + "head: []\n"


def _corpus() -> list[tuple[str, object]]:
    """Every fragment once on a valid base (one mutation each), then seeded random pairs."""
    rng = random.Random(SEED)
    cases: list[tuple[str, object]] = []
    for key, pool in POOLS.items():
        cases += [("inspect", _argv({**BASE, key: value})) for value in pool]
    for _ in range(20):
        a, b = rng.sample(list(POOLS), 2)
        cases.append(("inspect", _argv({**BASE, a: rng.choice(POOLS[a]), b: rng.choice(POOLS[b])})))
    cases += [("yaml", _doc(h, [BASE_YAML["row"]])) for h in HEADERS]
    cases += [("yaml", _doc(BASE_YAML["header"], [BASE_YAML["row"], r])) for r in ROWS]
    for _ in range(10):
        cases.append(("yaml", _doc(rng.choice(HEADERS), [rng.choice(ROWS) for _ in range(rng.randint(1, 3))])))
    return cases


CXX = re.compile(r"frame #\d|c10::|at::|libtorch|\.so\b|Exception raised from")


def _split() -> tuple[list, list]:
    """A seeded sample of 40 runs by default (a few seconds); the whole corpus with -m slow."""
    cases = _corpus()
    picked = set(random.Random(SEED).sample(range(len(cases)), 40))
    return [c for i, c in enumerate(cases) if i in picked], [c for i, c in enumerate(cases) if i not in picked]


DEFAULT, REST = _split()


def _ids(value: object) -> str | None:
    return None


@pytest.mark.parametrize("kind, case", DEFAULT, ids=_ids)
def test_fuzzed_command_lines(tmp_path, capsys, monkeypatch, kind, case):
    _check(tmp_path, capsys, monkeypatch, kind, case)


@pytest.mark.slow
@pytest.mark.parametrize("kind, case", REST, ids=_ids)
def test_fuzzed_command_lines_rest(tmp_path, capsys, monkeypatch, kind, case):
    _check(tmp_path, capsys, monkeypatch, kind, case)


def _check(tmp_path, capsys, monkeypatch, kind: str, case: object) -> None:
    monkeypatch.setenv(limits.ENV_MAX_MEMORY, "2G")  # the same verdicts on every machine
    if kind == "yaml":
        p = tmp_path / "fuzz.yaml"
        p.write_text(str(case))
        argv = ["profile", str(p), "--no-latency", "--no-memory", "--counter", "torch", "--size", "64"]
    else:
        argv = list(case)  # type: ignore[arg-type]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    code = exc.value.code
    err = capsys.readouterr().err
    shown = f"yb {' '.join(a[:60] for a in argv)}\n{case if kind == 'yaml' else ''}\n{err}"
    assert code in (0, 1, 2), shown
    assert "internal error" not in err and "Traceback" not in err and not CXX.search(err), shown
    if code:
        assert len(err.splitlines()) == 1 and err.startswith("error: "), shown


def test_the_corpus_is_fixed_and_mixed():
    """Same seed, same corpus; and it is not all rejections (valid runs are fuzzed too)."""
    assert len(_corpus()) == 155 and _corpus() == _corpus()
    assert sum(k == "inspect" and c == _argv(BASE) for k, c in _corpus()) >= 1
