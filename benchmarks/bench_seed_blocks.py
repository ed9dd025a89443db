"""Latency of the fixed seed blocks against the computation the articles published.

For each block, a minimal published-style module (written here, following the article's
forward step by step, bugs included) and the fixed block share the same weights
(``load_state_dict`` of one into the other: the parameter names are the published ones).
They are timed at square sizes where the published code runs. Target: median latency
ratio fixed / published <= 1.05.

    PYTHONPATH=. python benchmarks/bench_seed_blocks.py [--threads 1] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from blocks.attention import (FocusedLinearAttention, MLLAttention,
                              MultiQueryAttentionLayerWithDownSampling, S2Attention)

# --- published-style computations (as in the seed articles; square inputs only) -----------


class PublishedRoPE(nn.Module):
    """The article's RoPE: grid over the first spatial axis only, broadcast against the second."""

    def __init__(self, base: float = 10000.0):
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims, feat = [x.shape[1:-1][0]], x.shape[-1]
        k_max = feat // (2 * len(dims))
        theta = 1 / (self.base ** (torch.arange(k_max, dtype=x.dtype) / k_max))
        grids = torch.meshgrid([torch.arange(d, dtype=x.dtype) for d in dims], indexing="ij")
        angles = torch.cat([t.unsqueeze(-1) * theta for t in grids], dim=-1)
        rot = torch.cat([torch.cos(angles).unsqueeze(-1), torch.sin(angles).unsqueeze(-1)], dim=-1)
        xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(torch.view_as_complex(rot) * xc).flatten(-2)


class PublishedMLLA(nn.Module):
    def __init__(self, dim: int, num_heads: int = 4):
        super().__init__()
        self.num_heads = num_heads
        self.qk = nn.Linear(dim, dim * 2)
        self.elu = nn.ELU()
        self.lepe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.rope = PublishedRoPE()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape((x.size(0), x.size(2) * x.size(3), x.size(1)))  # no permute (published)
        b, n, c = x.shape
        h = w = int(n ** 0.5)
        nh, hd = self.num_heads, c // self.num_heads
        qk = self.qk(x).reshape(b, n, 2, c).permute(2, 0, 1, 3)
        q, k, v = qk[0], qk[1], x
        q, k = self.elu(q) + 1.0, self.elu(k) + 1.0
        q_rope = self.rope(q.reshape(b, h, w, c)).reshape(b, n, nh, hd).permute(0, 2, 1, 3)
        k_rope = self.rope(k.reshape(b, h, w, c)).reshape(b, n, nh, hd).permute(0, 2, 1, 3)
        q = q.reshape(b, n, nh, hd).permute(0, 2, 1, 3)
        k = k.reshape(b, n, nh, hd).permute(0, 2, 1, 3)
        v = v.reshape(b, n, nh, hd).permute(0, 2, 1, 3)
        z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
        kv = (k_rope.transpose(-2, -1) * (n ** -0.5)) @ (v * (n ** -0.5))
        x = q_rope @ kv * z
        x = x.transpose(1, 2).reshape(b, n, c)
        v = v.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)
        x = x + self.lepe(v).permute(0, 2, 3, 1).reshape(b, n, c)
        return x.transpose(2, 1).reshape((b, c, h, w))


class PublishedFLA(nn.Module):
    def __init__(self, dim: int, window_size=(20, 20), num_heads: int = 8, focusing_factor: float = 3,
                 kernel_size: int = 5):
        super().__init__()
        hd = dim // num_heads
        self.dim, self.num_heads, self.focusing_factor = dim, num_heads, focusing_factor
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.positional_encoding = nn.Parameter(torch.zeros(1, window_size[0] * window_size[1], dim))
        self.dwc = nn.Conv2d(hd, hd, kernel_size, groups=hd, padding=kernel_size // 2)
        self.scale = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, c).permute(2, 0, 1, 3).unbind(0)
        k = k + self.positional_encoding[:, :k.shape[1], :]
        q, k = nn.ReLU()(q) + 1e-6, nn.ReLU()(k) + 1e-6
        scale = nn.Softplus()(self.scale)
        q, k = q / scale, k / scale
        q_norm, k_norm = q.norm(dim=-1, keepdim=True), k.norm(dim=-1, keepdim=True)
        q, k = q ** self.focusing_factor, k ** self.focusing_factor
        q = (q / q.norm(dim=-1, keepdim=True)) * q_norm
        k = (k / k.norm(dim=-1, keepdim=True)) * k_norm
        q, k, v = (rearrange(t, "b n (h c) -> (b h) n c", h=self.num_heads) for t in (q, k, v))
        i, j, c2, d = q.shape[-2], k.shape[-2], k.shape[-1], v.shape[-1]
        z = 1 / (torch.einsum("b i c, b c -> b i", q, k.sum(dim=1)) + 1e-6)
        if i * j * (c2 + d) > c2 * d * (i + j):
            kv = torch.einsum("b j c, b j d -> b c d", k, v)
            x = torch.einsum("b i c, b c d, b i -> b i d", q, kv, z)
        else:
            qk = torch.einsum("b i c, b j c -> b i j", q, k)
            x = torch.einsum("b i j, b j d, b i -> b i d", qk, v, z)
        num = int(v.shape[1] ** 0.5)
        fm = rearrange(v, "b (w h) c -> b c w h", w=num, h=num)
        x = x + rearrange(self.dwc(fm), "b c w h -> b (w h) c")
        x = self.proj(rearrange(x, "(b h) n c -> b n (h c)", h=self.num_heads))
        return rearrange(x, "b (w h) c -> b c w h", b=b, c=self.dim, w=num, h=num)


def _conv(c1: int, c2: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c1, c2, 1, 1, 0, bias=False))


class PublishedMQA(nn.Module):
    """The article's MQA with strides 1 (its down-sampling branch cannot run)."""

    def __init__(self, c: int, num_heads: int, key_dim: int):
        super().__init__()
        self.num_heads, self.key_dim, self.head_dim = num_heads, key_dim, key_dim // num_heads
        self._query_proj = _conv(c, num_heads * key_dim)
        self._key_proj = _conv(c, key_dim)
        self._value_proj = _conv(c, key_dim)
        self._output_proj = _conv(num_heads * key_dim, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bs = x.size(0)
        q = self._query_proj(x)
        px = q.size(2)
        q = q.view(bs, self.num_heads, -1, self.key_dim)
        k = self._key_proj(x).view(bs, 1, self.key_dim, -1)
        v = self._value_proj(x).view(bs, 1, -1, self.key_dim)
        attn = F.softmax(torch.matmul(q, k) / (self.head_dim ** 0.5), dim=-1)
        context = torch.matmul(attn, v).view(bs, self.num_heads * self.key_dim, px, px)
        return self._output_proj(context)


def _published_shift(x: torch.Tensor, first_rows: bool) -> torch.Tensor:
    """The article's in-place overlapping shifts (spatial_shift1 / spatial_shift2)."""
    b, w, h, c = x.size()
    a, b_ = (slice(1, None), slice(None, w - 1)), (slice(None, w - 1), slice(1, None))
    ah, bh = (slice(1, None), slice(None, h - 1)), (slice(None, h - 1), slice(1, None))
    groups = [slice(0, c // 4), slice(c // 4, c // 2), slice(c // 2, c * 3 // 4), slice(3 * c // 4, c)]
    rows = [a, b_] if first_rows else [ah, bh]
    cols = [ah, bh] if first_rows else [a, b_]
    for g, (dst, src) in zip(groups[:2], rows):
        if first_rows:
            x[:, dst, :, g] = x[:, src, :, g]
        else:
            x[:, :, dst, g] = x[:, :, src, g]
    for g, (dst, src) in zip(groups[2:], cols):
        if first_rows:
            x[:, :, dst, g] = x[:, :, src, g]
        else:
            x[:, dst, :, g] = x[:, src, :, g]
    return x


class PublishedSplitAttention(nn.Module):
    def __init__(self, channel: int = 512, k: int = 3):
        super().__init__()
        self.channel, self.k = channel, k
        self.mlp1 = nn.Linear(channel, channel, bias=False)
        self.gelu = nn.GELU()
        self.mlp2 = nn.Linear(channel, channel * k, bias=False)
        self.softmax = nn.Softmax(1)

    def forward(self, x_all: torch.Tensor) -> torch.Tensor:
        b, k, h, w, c = x_all.shape
        x_all = x_all.reshape(b, k, -1, c)
        a = torch.sum(torch.sum(x_all, 1), 1)
        bar_a = self.softmax(self.mlp2(self.gelu(self.mlp1(a))).reshape(b, self.k, c))
        return torch.sum(bar_a.unsqueeze(-2) * x_all, 1).reshape(b, h, w, c)


class PublishedS2(nn.Module):
    def __init__(self, channels: int = 512):
        super().__init__()
        self.mlp1 = nn.Linear(channels, channels * 3)
        self.mlp2 = nn.Linear(channels, channels)
        self.split_attention = PublishedSplitAttention()  # fixed width 512, as published

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, w, h = x.size()
        x = self.mlp1(x.permute(0, 2, 3, 1))
        x1 = _published_shift(x[:, :, :, :c], True)
        x2 = _published_shift(x[:, :, :, c:c * 2], False)
        x3 = x[:, :, :, c * 2:]
        a = self.split_attention(torch.stack([x1, x2, x3], 1))
        return self.mlp2(a).permute(0, 3, 1, 2)


# --- timing ------------------------------------------------------------------------------


def paired_timings(pub, fixed, x: torch.Tensor, rounds: int, min_time: float = 0.02):
    """Per-call ms of both modules over `rounds` interleaved rounds (order alternating).

    The machine is shared: interleaving makes each round's ratio compare the two modules
    under the same load, and the median over rounds discards the disturbed ones.
    """
    with torch.inference_mode():
        for _ in range(3):
            pub(x), fixed(x)
        t0, calls = time.perf_counter(), 0
        while time.perf_counter() - t0 < min_time:
            pub(x)
            calls += 1
        per_round = max(1, calls)
        t_pub, t_fix = [], []
        for r in range(rounds):
            order = ((pub, t_pub), (fixed, t_fix)) if r % 2 == 0 else ((fixed, t_fix), (pub, t_pub))
            for fn, acc in order:
                t0 = time.perf_counter()
                for _ in range(per_round):
                    fn(x)
                acc.append((time.perf_counter() - t0) / per_round * 1e3)
    return t_pub, t_fix


def cases():
    """(label, published, fixed, input shape) at square sizes where the published code runs."""
    out = []
    for c, s in ((64, 20), (256, 20), (256, 40)):
        out.append((f"MLLAttention C={c}", PublishedMLLA(c), MLLAttention(c), (2, c, s, s)))
    for c, s in ((256, 20), (128, 20), (256, 10)):
        out.append((f"FocusedLinearAttention C={c}", PublishedFLA(c), FocusedLinearAttention(c), (2, c, s, s)))
    for c, s in ((64, 20), (64, 40), (128, 20)):
        out.append((f"Mobile MQA C={c} 8x48", PublishedMQA(c, 8, 48),
                    MultiQueryAttentionLayerWithDownSampling(c, 8, 48, 48, 1, 1, 1), (2, c, s, s)))
    for s in (20, 40):
        out.append(("S2Attention C=512", PublishedS2(512), S2Attention(512), (2, 512, s, s)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=41)
    ap.add_argument("--only", default="", help="run only blocks whose label contains this text")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} interleaved rounds, CPU float32;"
          " ratio = median over rounds of fixed/published, min r = ratio of the fastest rounds")
    header = (f"{'block':34s} {'input':>16s} {'published ms':>13s} {'fixed ms':>9s} {'ratio':>6s} "
              f"{'min r':>6s}  same output")
    print(header)
    print("-" * len(header))
    ratios = []
    for label, pub, fixed, shape in cases():
        if args.only.lower() not in label.lower():
            continue
        with torch.no_grad():
            for p in pub.parameters():
                p.normal_(0, 0.05)
        fixed.load_state_dict(pub.state_dict(), strict=True)  # the published parameter names
        pub.eval(), fixed.eval()
        x = torch.randn(*shape)
        with torch.no_grad():
            same = torch.allclose(pub(x.clone()), fixed(x), rtol=1e-4, atol=1e-5)
        t_pub, t_fix = paired_timings(pub, fixed, x, args.repeats)
        ratio = statistics.median(f / p for f, p in zip(t_fix, t_pub))
        ratios.append(ratio)
        print(f"{label:34s} {'x'.join(map(str, shape)):>16s} {statistics.median(t_pub):13.3f} "
              f"{statistics.median(t_fix):9.3f} {ratio:6.2f} {min(t_fix) / min(t_pub):6.2f}  {same}")
    print(f"geometric-mean ratio: {statistics.geometric_mean(ratios):.2f}  (target <= 1.05 per block)")


if __name__ == "__main__":
    main()
