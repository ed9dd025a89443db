"""Deploy-time folding of a built model: ultralytics' ``model.fuse()``, from the blocks' own hooks.

A block that can be folded for deployment defines ``fuse_deploy(self) -> None`` and folds
itself in place (Conv: BatchNorm into the convolution; RepVGGDW/RepConvN: branches merged into
one kernel; Detect: the inference-unused branch dropped; Segment26/Pose26: training-only parts
dropped). :func:`fuse_model` visits modules children first, so a block that merges its children
sees them already folded. No class list lives here: a new foldable block only defines the hook.

A head that stops reading some of its inputs when folded (YOLOv7's ``IAuxDetect`` drops its
auxiliary convs) sets ``reads_inputs`` to how many of its first inputs it still reads; the layers
that only fed the others are then removed and the rest renumbered, which is the repository's
deploy YAML (yolov7-w6: 122 layers -> 119, the head becomes layer 118 as in ``deploy/yolov7-w6``).
"""

from __future__ import annotations

from typing import Any


def _post_order(module: Any) -> list[Any]:
    order: list[Any] = []
    seen: set[int] = set()

    def visit(m: Any) -> None:
        if id(m) in seen:
            return
        seen.add(id(m))
        for child in list(m.children()):
            visit(child)
        order.append(m)

    visit(module)
    return order


def fuse_model(model: Any) -> int:
    """Fold every module of ``model`` that defines ``fuse_deploy``, in place; returns how many were asked."""
    count = 0
    for m in _post_order(model):
        hook = getattr(m, "fuse_deploy", None)
        if callable(hook):
            hook()
            count += 1
    return count


def fuse_built(built: Any) -> None:
    """Fuse a :class:`~yoloblocks_cli.loading.yaml_model.BuiltModel` and refresh its per-layer parameter counts."""
    fuse_model(built.model)
    prune_unread_layers(built)
    for info, layer in zip(built.layers, built.model.model):
        layer.np = info.params = sum(p.numel() for p in layer.parameters())
    built.fused = True


def _sources(i: int, f: Any) -> list[int]:
    """Absolute indices of the layers that layer ``i`` reads (``-1``: the previous one)."""
    out = [j if j >= 0 else i + j for j in ([f] if isinstance(f, int) else f)]
    return [j for j in out if j >= 0]  # layer 0's -1 is the image


def _live(layers: list[Any]) -> set[int]:
    live = {len(layers) - 1}
    for i in range(len(layers) - 1, -1, -1):
        if i in live:
            live.update(_sources(i, layers[i].f))
    return live


def prune_unread_layers(built: Any) -> list[int]:
    """Trim the inputs of layers that set ``reads_inputs``; remove the layers only those inputs needed.

    Only layers made dead by the trim go (a layer nothing reads that was in the graph before, such as
    YOLO-World's ImagePoolingAttn, which acts through the class embeddings, stays). Returns the removed
    indices (old numbering)."""
    from torch import nn

    layers = list(built.model.model)
    before = _live(layers)
    for m in layers:
        keep = getattr(m, "reads_inputs", None)
        if isinstance(keep, int) and isinstance(m.f, list) and keep < len(m.f):
            m.f = m.f[:keep]
    removed = sorted(before - _live(layers))
    if not removed:
        return []
    kept = [i for i in range(len(layers)) if i not in removed]
    new_index = {old: new for new, old in enumerate(kept)}
    infos = {info.index: info for info in built.layers}

    def remap(f: int, old: int) -> int:  # -1 stays "the previous layer": it is kept whenever it was read
        return -1 if f == -1 else new_index[f if f >= 0 else old + f]

    for old in kept:
        m = layers[old]
        new = new_index[old]
        m.f = remap(m.f, old) if isinstance(m.f, int) else [remap(f, old) for f in m.f]
        m.i = new
        if old in infos:
            infos[old].index, infos[old].from_ = new, m.f
    built.model.model = nn.Sequential(*(layers[i] for i in kept))
    built.model.save = sorted({f % i for i, m in enumerate(built.model.model)
                               for f in ([m.f] if isinstance(m.f, int) else m.f) if f != -1})
    built.layers = [infos[i] for i in kept if i in infos]
    return removed
