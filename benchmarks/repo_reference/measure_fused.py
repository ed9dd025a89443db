"""The repository's own model.fuse(), then the same facts as measure.py (params, gradients, modules, GFLOPs).

usage: python measure_fused.py REPO_DIR KEY_PREFIX OUT.json YAML...
"""
import contextlib, io, json, os, sys, time
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


def gflops(model):
    """As measure.py: thop on a (1, ch, s, s) image, s = max(stride, 32), 2 x MACs, scaled to 640x640."""
    stride = max(int(model.stride.max()), 32) if hasattr(model, "stride") else 32
    p = next(model.parameters())
    im = torch.zeros((1, p.shape[1], stride, stride), device=p.device)
    return thop.profile(deepcopy(model), inputs=(im,), verbose=False)[0] / 1e9 * 2 * 640 / stride * 640 / stride


res = json.load(open(out)) if os.path.exists(out) else {}
for y in yamls:
    key = f"{prefix}/{y}"
    if key in res:
        continue
    t = time.time()
    torch.manual_seed(0)
    try:
        m = Y.Model(y).eval()
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            m.fuse()
        m.eval()
        r = {"params": sum(x.numel() for x in m.parameters()),
             "gradients": sum(x.numel() for x in m.parameters() if x.requires_grad),
             "modules": len(list(m.modules()))}
        try:
            r["gflops"] = round(gflops(m), 6)
        except Exception as exc:
            r["gflops"], r["gflops_error"] = None, f"{type(exc).__name__}: {str(exc)[:200]}"
    except Exception as exc:
        r = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    r["seconds"] = round(time.time() - t, 1)
    res[key] = r
    print(key, r, flush=True)
    json.dump(res, open(out, "w"), indent=1)
