"""Deploy-time folding of a built model: ultralytics' ``model.fuse()``, from the blocks' own hooks.

A block that can be folded for deployment defines ``fuse_deploy(self) -> None`` and folds
itself in place (Conv: BatchNorm into the convolution; RepVGGDW/RepConvN: branches merged into
one kernel; Detect: the inference-unused branch dropped; Segment26/Pose26: training-only parts
dropped). :func:`fuse_model` visits modules children first, so a block that merges its children
sees them already folded. No class list lives here: a new foldable block only defines the hook.
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
    for info, layer in zip(built.layers, built.model.model):
        layer.np = info.params = sum(p.numel() for p in layer.parameters())
    built.fused = True
