"""Build every model YAML of one repository with its own models/yolo.py; dump params, modules, GFLOPs.

usage: python measure.py REPO_DIR KEY_PREFIX OUT.json YAML...
"""
import json, os, sys, time, traceback
from copy import deepcopy

repo, prefix, out = sys.argv[1:4]
yamls = sys.argv[4:]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stubs  # noqa: F401  (stand-ins for packages model building never uses)
os.chdir(repo)
sys.path.insert(0, os.getcwd())
import logging
logging.disable(logging.CRITICAL)
import torch
import thop
import models.yolo as Y

Model = getattr(Y, "Model")


def gflops(model):
    """model_info's way: thop on a (1, ch, s, s) image, s = max(stride, 32), 2 x MACs, scaled to 640x640."""
    stride = max(int(model.stride.max()), 32) if hasattr(model, "stride") else 32
    p = next(model.parameters())
    im = torch.zeros((1, p.shape[1], stride, stride), device=p.device)
    flops = thop.profile(deepcopy(model), inputs=(im,), verbose=False)[0] / 1e9 * 2
    return flops * 640 / stride * 640 / stride


def facts(model):
    r = {
        "params": sum(x.numel() for x in model.parameters()),
        "gradients": sum(x.numel() for x in model.parameters() if x.requires_grad),
        "modules": len(list(model.modules())),
    }
    try:  # model_info's own try: thop failing means the summary line prints no GFLOPs
        r["gflops"] = round(gflops(model), 6)
    except Exception as exc:
        r["gflops"] = None
        r["gflops_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return r


def fused_facts(model):
    """The same facts after the repository's own ``model.fuse()`` (its deploy-time folding)."""
    import contextlib
    import io

    f = deepcopy(model)
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        f.fuse()
    return facts(f.eval())


FUSED_ONLY = bool(os.environ.get("FUSED_ONLY"))  # OUT.json holds fused facts only: for assemble.py --fused
res = {}
if os.path.exists(out):
    res = json.load(open(out))
SEED = os.environ.get("SEED_JSON")  # already-measured keys to skip (the first fixture's 15 models)
seed = json.load(open(SEED)) if SEED else {}
for y in yamls:
    key = f"{prefix}/{y}"
    if key in res or key in seed:
        continue
    t = time.time()
    torch.manual_seed(0)
    try:
        m = Model(y)
        m.eval()
        if FUSED_ONLY:
            r = fused_facts(m)
        else:
            r = facts(m)
            r["layer_params"] = [int(l.np) for l in m.model]
            r["stride"] = [float(s) for s in m.stride]
    except Exception as exc:
        r = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
    r["seconds"] = round(time.time() - t, 1)
    res[key] = r
    print(key, {k: v for k, v in r.items() if k not in ("layer_params", "trace")}, flush=True)
    json.dump(res, open(out, "w"), indent=1)
