"""The pure-PyTorch selective scan: exact against a float64 loop, differentiable, one op."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import blocks.mamba.scan as scan_mod
import blocks.mamba.scan_torch as scan_torch
from blocks.flop_formulas import OP_FORMULAS
from blocks.mamba.recurrence import chunk_length, linear_recurrence
from blocks.mamba.scan import resolve_backend, selective_scan, set_scan_backend


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids OpenMP barrier stalls on a loaded 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def reference_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Per-step float64 loop: the definition of the selective scan."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    bsz, dim, length = u.shape
    if B.dim() == 3:
        B, C = B[:, None], C[:, None]
    rep = dim // B.shape[1]
    Bx, Cx = B.repeat_interleave(rep, 1), C.repeat_interleave(rep, 1)
    h = torch.zeros(bsz, dim, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[:, :, None] * Bx[:, :, :, t]
        ys.append((h * Cx[:, :, :, t]).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        y = y * F.silu(z.double())
    return y, h


def make_inputs(length, bsz=2, dim=8, nstate=16, groups=2, scale=1.0, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    A = -torch.arange(1, nstate + 1, dtype=dtype).repeat(dim, 1)  # A = -[1..16]
    return dict(u=r(bsz, dim, length), delta=r(bsz, dim, length) * scale, A=A,
                B=r(bsz, groups, nstate, length), C=r(bsz, groups, nstate, length),
                D=r(dim), z=r(bsz, dim, length), delta_bias=r(dim))


def assert_close_to_reference(inp, **kw):
    y, last = selective_scan(**inp, **kw, return_last_state=True)
    y_ref, last_ref = reference_scan(**inp, **kw)
    assert torch.isfinite(y).all() and torch.isfinite(last).all()
    tol = 1e-5 * max(1.0, y_ref.abs().max().item())
    assert (y.double() - y_ref).abs().max().item() <= tol
    tol_h = 1e-5 * max(1.0, last_ref.abs().max().item())
    assert (last.double() - last_ref).abs().max().item() <= tol_h


CHUNK = chunk_length(64)


@pytest.mark.parametrize("length", [1, 2, CHUNK - 1, CHUNK, CHUNK + 1, 64, 65, 1000])
def test_matches_float64_loop(length):
    inp = make_inputs(length)
    assert_close_to_reference(inp, delta_softplus=True)


def test_large_delta_never_overflows():
    """dt up to ~60 with A = -16 gives exp(-960) per step: must underflow to 0, not NaN."""
    inp = make_inputs(300, scale=60.0)
    assert_close_to_reference(inp, delta_softplus=True)
    inp["delta"] = inp["delta"].abs()  # no softplus: raw large positive dt
    inp["delta_bias"] = None
    assert_close_to_reference(inp, delta_softplus=False)


def test_ungrouped_b_c_and_no_optionals():
    inp = make_inputs(37, groups=1)
    inp["B"], inp["C"] = inp["B"][:, 0], inp["C"][:, 0]
    for key in ("D", "z", "delta_bias"):
        inp[key] = None
    inp["delta"] = inp["delta"].abs()
    assert_close_to_reference(inp)


def test_many_segments_match(monkeypatch):
    """Segmenting the sequence (bounded memory) changes nothing."""
    monkeypatch.setattr(scan_torch, "SEGMENT_ELEMENTS", 2 * 8 * 16 * 7)  # 7 steps per segment
    assert_close_to_reference(make_inputs(50), delta_softplus=True)


def test_linear_recurrence_chunk_boundaries():
    g = torch.Generator().manual_seed(1)
    for length in (1, 3, 15, 16, 17, 100):
        a = torch.rand(3, length, generator=g, dtype=torch.float64)
        b = torch.randn(3, length, generator=g, dtype=torch.float64)
        h0 = torch.randn(3, generator=g, dtype=torch.float64)
        h = linear_recurrence(a, b, h0)
        state, ref = h0, []
        for t in range(length):
            state = a[:, t] * state + b[:, t]
            ref.append(state)
        assert torch.allclose(h, torch.stack(ref, -1), atol=1e-12)


def test_gradcheck_float64_through_the_op(monkeypatch):
    monkeypatch.setattr(scan_torch, "SEGMENT_ELEMENTS", 1 * 4 * 3 * 4)  # 3 segments of 4 steps
    inp = make_inputs(11, bsz=1, dim=4, nstate=3, groups=2, dtype=torch.float64)
    inp["A"] = -torch.rand(4, 3, dtype=torch.float64) - 0.5
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    args = tuple(inp[k].clone().requires_grad_(True) for k in names)

    def f(*a):
        return selective_scan(*a, delta_softplus=True, return_last_state=True)

    assert torch.autograd.gradcheck(f, args)


def test_gradcheck_without_optionals():
    inp = make_inputs(9, bsz=2, dim=2, nstate=2, groups=1, dtype=torch.float64)
    args = (inp["u"], inp["delta"].abs(), -torch.rand(2, 2, dtype=torch.float64), inp["B"][:, 0], inp["C"][:, 0])
    args = tuple(t.clone().requires_grad_(True) for t in args)
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a), args)


def test_dispatch_counter_sees_one_op_with_the_formula():
    inp = make_inputs(20, bsz=1, dim=8, nstate=16, groups=2)
    with FlopCounterMode(display=False) as counter:
        selective_scan(**inp, delta_softplus=True)
    counts = counter.get_flop_counts()["Global"]
    expected = 9 * 1 * 8 * 20 * 16 + 1 * 8 * 20 + 1 * 8 * 20  # + D skip + z gate
    assert {str(k): v for k, v in counts.items()} == {"yoloblocks.selective_scan": expected}
    assert OP_FORMULAS["yoloblocks::selective_scan"]((1, 8, 20), (1, 8, 20), (8, 16), (1, 2, 16, 20),
                                                    (1, 2, 16, 20)) == 9 * 8 * 20 * 16


def test_backend_setting(monkeypatch):
    monkeypatch.delenv("YB_SCAN", raising=False)
    set_scan_backend(None)
    monkeypatch.setattr(scan_mod, "load_kernel", lambda: None)
    assert resolve_backend("cpu") == "torch"
    assert resolve_backend("cuda") == "torch"  # auto without a kernel
    fake = types.SimpleNamespace(__name__="selective_scan_cuda_core")
    monkeypatch.setattr(scan_mod, "load_kernel", lambda: fake)
    assert resolve_backend("cuda") == "kernel"
    assert resolve_backend("cpu") == "torch"
    monkeypatch.setenv("YB_SCAN", "torch")
    assert resolve_backend("cuda") == "torch"
    monkeypatch.setenv("YB_SCAN", "kernel")
    with pytest.raises(RuntimeError, match="YB_SCAN=kernel needs CUDA tensors"):
        resolve_backend("cpu")
    monkeypatch.setenv("YB_SCAN", "bogus")
    with pytest.raises(ValueError, match="YB_SCAN must be one of auto, torch, kernel, got 'bogus'"):
        resolve_backend("cuda")
    set_scan_backend("torch")
    assert resolve_backend("cuda") == "torch"  # the function wins over the environment
    set_scan_backend(None)
    with pytest.raises(ValueError, match="scan backend must be one of"):
        set_scan_backend("cuda")


def _fake_kernel(name):
    """A stand-in extension following the kernels' calling conventions, computed on CPU."""
    calls = []

    def fwd(u, delta, A, B, C, D, *rest):
        calls.append(("fwd", B.dim(), len(rest)))
        if name.endswith("_core"):
            delta_bias, softplus, _nrows = rest
            z = None
        else:
            z, delta_bias, softplus = rest
        out, last, _ = scan_torch.scan_forward(u, delta, A, B, C, D, None, delta_bias, softplus)
        states = torch.zeros(*last.shape[:2], 1, 2 * last.shape[2])
        states[:, :, -1, 1::2] = last
        if z is not None:
            return out, states, out * F.silu(z)
        return out, states

    def bwd(u, delta, A, B, C, D, *rest):
        calls.append(("bwd", B.dim(), len(rest)))
        if name.endswith("_core"):
            delta_bias, dout, _x, softplus, _n = rest
            z = None
        else:
            z, delta_bias, dout, _x, _out, _dz, softplus, _rec = rest
        out, last, ck = scan_torch.scan_forward(u, delta, A, B, C, D, None, delta_bias, softplus)
        dz = None
        if z is not None:  # the kernel's dout is the gradient of out * silu(z)
            sig = torch.sigmoid(z)
            dz = dout * out * sig * (1 + z * (1 - sig))
            dout = dout * z * sig
        g = scan_torch.scan_backward(dout, None, ck, u, delta, A, B, C, D, None, delta_bias, softplus)
        return (*g[:6], g[7], dz) if z is not None else (*g[:6], g[7])

    return types.SimpleNamespace(__name__=name, fwd=fwd, bwd=bwd), calls


@pytest.mark.parametrize("name,with_z", [("selective_scan_cuda_core", False), ("selective_scan_cuda", False),
                                         ("selective_scan_cuda_core", True), ("selective_scan_cuda", True)])
def test_kernel_path_calls_extension_and_matches(monkeypatch, name, with_z):
    """With the backend forced to the kernel, forward and backward go through its fwd/bwd."""
    fake, calls = _fake_kernel(name)
    monkeypatch.setattr(scan_mod, "load_kernel", lambda: fake)
    monkeypatch.setattr(scan_mod, "resolve_backend", lambda device: "kernel")
    inp = make_inputs(12, bsz=1, dim=4, nstate=3, groups=1)
    inp["B"], inp["C"] = inp["B"][:, 0], inp["C"][:, 0]
    if not with_z:
        inp["z"] = None
    leaves = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in inp.items() if v is not None}
    out, last = selective_scan(**leaves, delta_softplus=True, return_last_state=True)
    out.sum().backward()
    assert [c[0] for c in calls] == ["fwd", "fwd", "bwd"]  # bwd recomputes the kernel's states
    if name.endswith("_core"):
        assert all(c[2] == (3 if c[0] == "fwd" else 5) for c in calls)  # VMamba core: no z argument
    else:
        assert all(c[2] == (3 if c[0] == "fwd" else 8) for c in calls)  # mamba_ssm: z passed through
    assert all(c[1] == 4 for c in calls)  # B handed over grouped (b, G, N, L)
    y_ref, last_ref = reference_scan(**inp, delta_softplus=True)
    assert torch.allclose(out.double(), y_ref, atol=1e-4) and torch.allclose(last.double(), last_ref, atol=1e-4)
    monkeypatch.setattr(scan_mod, "resolve_backend", lambda device: "torch")
    ref_leaves = {k: v.detach().clone().requires_grad_(True) for k, v in leaves.items()}
    selective_scan(**ref_leaves, delta_softplus=True).sum().backward()
    for k in leaves:
        assert torch.allclose(leaves[k].grad, ref_leaves[k].grad, atol=1e-5), k


@pytest.mark.parametrize("length", [1, 2, 7, 8, 9, 15, 16, 17, 200])
def test_chunk_boundaries_with_a_fixed_chunk(monkeypatch, length):
    """T = 8 pinned: lengths at chunk-1, chunk, chunk+1 (and 2 chunks +-1) are exact."""
    monkeypatch.setattr(scan_torch, "chunk_length", lambda n: 8)
    assert_close_to_reference(make_inputs(length, scale=5.0), delta_softplus=True)
