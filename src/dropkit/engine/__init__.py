"""TEMPORARY placeholder for the mask engine (replaced by the real Philox engine)."""
import torch


def draw_seed(generator=None) -> int:
    return int(torch.randint(0, 2**63 - 1, (), generator=generator, dtype=torch.int64).item())


def keep_mask(shape, p, seed, offset=0, device=None):
    g = torch.Generator().manual_seed((seed + offset) % (2**63))
    return (torch.rand(tuple(shape), generator=g) >= p).to(device)


class _Drop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p, scale, seed, offset):
        ctx.args = (p, scale, seed, offset)
        m = keep_mask(x.shape, p, seed, offset, x.device)
        return torch.where(m, x * scale, torch.zeros((), dtype=x.dtype, device=x.device))

    @staticmethod
    def backward(ctx, g):
        p, scale, seed, offset = ctx.args
        m = keep_mask(g.shape, p, seed, offset, g.device)
        return torch.where(m, g * scale, torch.zeros((), dtype=g.dtype)), None, None, None, None


def dropout(x, p, scale, seed, offset=0):
    return _Drop.apply(x, p, scale, seed, offset)


def dropout_(x, p, scale, seed, offset=0):
    with torch.no_grad():
        x.copy_(dropout(x, p, scale, seed, offset))
    return x
