"""Regenerates docs/user-blocks.md: runs every command of the page and pastes its real output.

    python docs/examples/user-blocks/make_doc.py     (from the repository root)

Each ``{{yb ARGS}}`` line of the template below becomes ``$ yb ARGS``, the command's stdout and
stderr, and its exit code. tests/test_user_blocks.py checks the same cases exactly.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "docs" / "user-blocks.md"

TEMPLATE = r'''# Blocks as you bring them: your class, your layout, the right cause

Blocks copied from public collections are written for *their* authors' pipelines: tokens
`(B, N, C)` with `forward(x, H, W)`, channels-last maps, `forward(q, k, v)`, weights sized
for one resolution, parameter-free gates. This page shows how `yb` takes them as they are,
and what it says when they break. Every block below is in
`tests/fixtures/user_blocks.py` (written for the test suite in the style of those
collections; `tests/test_user_blocks.py` checks each case exactly). The output is real: this
page is produced by `docs/examples/user-blocks/make_doc.py`.

```
yb trace BLOCK [--layout nchw|nhwc|bnc] [--inputs NAME=DIMS,...] [--root DIR] [--kwargs name=value]
yb inspect BLOCK --size CxHxW [--layout ...] [--inputs ...] [--root DIR]
yb trace|profile|compare MODEL.yaml --plugin my_blocks.py     (yb check: plugins = ["my_blocks.py"])
```

## Your file wins over the registry

A class in a `--plugin` file (or named as `file.py:Class`) is used even when a shipped block
has the same name: the YAML name resolves to your class first, in `trace`, `profile`,
`compare` and `check`. A note on stderr says it shadows the registered block, and the
report says which class was used and from which file (`plugins` in the JSON of
`trace`, `profile` and `check`; `block` for a single block in `trace`).

{{yb trace tests/fixtures/user-c2f.yaml --plugin tests/fixtures/user_blocks.py --sizes 64 --probes sweep}}

`yb profile` of the same YAML counts your `C2f` (272 parameters, one 1x1 convolution), not
the registered one (1,888):

{{yb profile tests/fixtures/user-c2f.yaml --plugin tests/fixtures/user_blocks.py --size 64 --no-latency --no-memory --counter torch}}

A plugin class the file only imports from the block library (`from blocks import C2f`) is
the registered block itself and shadows nothing.

## Input layouts: `--layout` and `--inputs`

`--size CxHxW` always describes the *map* (B, C, H, W); `--layout` says how the block's
`forward` takes it:

| `--layout` | the forward receives | typical blocks |
| --- | --- | --- |
| `nchw` (default) | `(B, C, H, W)` | convolutions, YOLO blocks |
| `nhwc` | `(B, H, W, C)`, contiguous | Outlook/VOLO-style, ConvNeXt blocks written channels-last |
| `bnc` | `(B, N, C)` tokens, `N = H*W`, contiguous | external attention, transformer blocks |

Where the forward asks for sizes by name they are passed from the map: `H`, `W` (also `h`,
`w`, `height`, `width`), and `(H, W)` for `hw_shape`, `x_size`, `hw`; required ones always,
optional ones with `--layout bnc` (tokens carry no H and W). More tensor inputs come from
`--inputs name=DIMS` (repeat or comma-separate), dims being numbers or `B`, `C`, `H`, `W`,
`N`: `--inputs k=BxNxC,v=BxNxC` for `forward(q, k, v)`. An extra input with a leading `B`
is derived from that sample of the map, so sample *i* run alone gets the same `k` and `v`
as in the batch and the `batch` probe stays meaningful.

The probes keep working in every layout: the map is sliced, repeated and re-laid out and
then converted at the call, before any hook, so failures show what the forward really
received. In `nhwc` and `bnc` the `channels-last` probe feeds the *strided* variant of the
layout (`x.permute(0, 2, 3, 1)` or `x.flatten(2).transpose(1, 2)` without `.contiguous()`),
which is what it means for such blocks: the same values in another memory order.

A token block fed NCHW fails in its first Linear. `yb` does not call that a hard-coded width
(the Linear *was* built from `c1`): it names the layout option.

{{yb trace tests/fixtures/user_blocks.py:TokenMemoryAttention --size 16x8x8 --probes sweep --sizes 16x8x8}}

{{yb trace tests/fixtures/user_blocks.py:TokenMemoryAttention --size 16x8x8 --layout bnc}}

`forward(x, H, W)` on tokens:

{{yb trace tests/fixtures/user_blocks.py:TokenConvFFN --size 16x8x8 --layout bnc --probes sweep,batch,train}}

`forward(q, k, v)`; without `--inputs` it is a usage error that says what to pass:

{{yb trace tests/fixtures/user_blocks.py:QKVCore --sizes 16x8x6 --layout bnc}}

{{yb trace tests/fixtures/user_blocks.py:QKVCore --sizes 16x8x6,2x16x8x6 --layout bnc --inputs k=BxNxC,v=BxNxC}}

The reverse mistake, a plain NCHW block run with `--layout nhwc`:

{{yb trace tests/fixtures/user_blocks.py:NCHWConv --sizes 16x8x6 --layout nhwc --probes sweep}}

`yb inspect` takes the same options; the input is laid out before timing, so the timed call
is the block's own (H, W and extra inputs are bound for each size):

{{yb inspect tests/fixtures/user_blocks.py:TokenConvFFN --size 16x8x6 --layout bnc --no-latency --no-memory}}

## Causes, only on evidence

A width mismatch (a convolution, Linear, LayerNorm or BatchNorm given the wrong size along
the axis it reads) is classified by what that axis holds in this configuration (C, H, W of the
map; N = H*W):

| cause | evidence |
| --- | --- |
| `input-layout` | the failing layer got the block's own input, was built for `c1`, and reads an axis that holds H, W or N in this layout: the hint names `--layout` |
| `fixed-spatial-size` | a Linear over an axis holding H or W (not C): `Linear(h, h)` over the height, built for one size |
| `fixed-token-count` | a Linear over the N = H*W axis; or a flattening `view(-1, K)` whose rows of K values the input no longer divides into; or (as before) a parameter holding the old token count |
| `hard-coded-width` | the axis holds channels and the layer's constant differs from `c1` |
| `width-mismatch` | the axis holds channels and the layer was built for `c1`, but receives another width (a concat or expansion inside the block) |
| `divisibility` | a failed assertion on `H % k` (k read from the line: a literal or `self.attr`), a reshape into `k x k` blocks, einops' "can't divide axis ... in chunks of k", with H or W not a multiple of k |
| `fixed-size-tensor` | a broadcast of the map (H or W now) against a parameter or buffer of the block that holds another size |
| `shrinking-map` | a broadcast against a branch that came out smaller by exactly what a stride-1 convolution without enough padding loses (`dilation * (kernel - 1) - 2 * padding`) |

sMLP-style `Linear(w, w)` over the width, built for 8x8:

{{yb trace tests/fixtures/user_blocks.py:AxisMLP --kwargs h=8 --kwargs w=8 --sizes 16x8x8,16x8x6 --probes sweep}}

The one real hard-coded width (a `Linear(64, 64)` whatever `c1` is; at `c1 = 64` it passes):

{{yb trace tests/fixtures/user_blocks.py:HardWidth --sizes 32x8x6 --probes sweep}}

{{yb trace tests/fixtures/user_blocks.py:HardWidth --sizes 64x8x6 --probes sweep}}

RepMLP-style flattening into rows of 1024 values. At 20x20 the 25,600 values happen to
split into rows of 1024 and nothing raises; at 20x15 they do not:

{{yb trace tests/fixtures/user_blocks.py:FlatFC --sizes 64x20x20,64x20x15 --probes sweep}}

HaloAttention-style blocks of 4x4 with an assertion:

{{yb trace tests/fixtures/user_blocks.py:BlockLocalAttention --sizes 16x8x8,16x8x6 --probes sweep}}

BAM-style gate through a dilated convolution left without padding:

{{yb trace tests/fixtures/user_blocks.py:DilatedGate --sizes 16x8x8 --probes sweep}}

A learned bias of 20x20 added to the map:

{{yb trace tests/fixtures/user_blocks.py:PositionBias --sizes 16x20x20,16x20x15 --probes sweep}}

## Batch mixing named at the operation, warnings kept

When sample *i* of a batch differs from sample *i* run alone, both runs are replayed under
a `TorchFunctionMode` that sees every torch call; the first op whose sample-*i* output
differs (every op before it agreed) is named with its line in your code. A `softmax`
without `dim` on a 3-D tensor takes dim 0, the batch (DoubleAttention-style):

{{yb trace tests/fixtures/user_blocks.py:GatherDistribute --sizes 2x16x6x6 --probes sweep,batch}}

Warnings raised while the block runs are collected over the whole sweep and shown with
their line and how often they were raised (`warnings` in the JSON), rather than scrolling
past once on stderr.

## Parameter-free blocks

The `train` probe feeds an input that requires grad (a clone of a leaf, so in-place ops on
it stay legal, as inside a model). A block without parameters (SimAM-style) passes when the
gradient reaches its input, and fails only when nothing can be back-propagated:

{{yb trace tests/fixtures/user_blocks.py:EnergyGate --sizes 16x6x6 --probes train,grads}}

{{yb trace tests/fixtures/user_blocks.py:SignMap --sizes 16x6x6 --probes train,grads}}

## Files that import from their repository root

`model/attention/gated_pair.py` does `from model.attention.gates import ChannelGate`. `yb`
finds the repository root, the nearest parent folder that holds every absolute import the
file's own folder and the installed packages do not, or `--root DIR` names it. Both folders
are on `sys.path` only while the file is imported, so a `thop.py` or `blocks/` beside your
block cannot shadow a module the tool imports later. A width given by keyword, as the
collections' examples build their blocks, is not prepended again:

{{yb trace tests/fixtures/userrepo/model/attention/gated_pair.py:GatedPair --kwargs channel=16 --sizes 16x6x6 --probes sweep}}

## Skipped is not passed

A configuration too small for the block (a pooling window larger than the map) is
reported as skipped: `"ok": null, "status": "skip"` in the JSON (`"ok": true` before), and
counted in `skipped`, not `passed`:

{{yb trace ADown --sizes 16x1x20,16x8x8 --probes sweep}}
'''


def run(args: str) -> str:
    env = dict(os.environ, NO_COLOR="1", COLUMNS="160", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "yoloblocks_cli", *shlex.split(args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    out = (proc.stdout.rstrip() + ("\n" + proc.stderr.rstrip() if proc.stderr.strip() else "")).strip("\n")
    lines = [line.rstrip() for line in out.splitlines()]
    return "```\n$ yb " + args + "\n" + "\n".join(lines) + f"\nexit {proc.returncode}\n```"


def main() -> None:
    text = re.sub(r"^\{\{yb (.+)\}\}$", lambda m: run(m.group(1)), TEMPLATE, flags=re.M)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
