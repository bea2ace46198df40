"""The ops torch.compile traces (seed, rate, scale as tensors) draw the eager masks."""

import pytest
import torch

from dropkit import engine
from dropkit.engine import traced


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.095, 1 / 3, 0.5, 1.0])
def test_tensor_rate_op_equals_the_eager_engine(dtype, p):
    # p = 0.095 is a rate a linear schedule produces; the threshold comes from the same float
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    seed, offset = 2**63 + 12345, 7  # a seed past 2**63 crosses as its int64 bit pattern
    x = torch.randn(5, 211, dtype=dtype, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    seed_t = torch.tensor(seed - 2**64, dtype=torch.int64)
    y = traced.dropout(x, traced.scalar_tensor(p), traced.scalar_tensor(scale), seed_t, offset)
    y2 = engine.dropout(x2, p, scale, seed, offset)
    assert torch.equal(y, y2)
    grad = torch.randn_like(y)
    y.backward(grad)
    y2.backward(grad)
    assert torch.equal(x.grad, x2.grad)
    mask = traced.keep_mask((3, 50), p, seed_t, offset)  # a float rate is taken as well
    assert torch.equal(mask, engine.keep_mask((3, 50), p, seed, offset))


def test_only_one_element_tensors_are_saved_for_backward():
    saved = []
    x = torch.randn(3, 1000, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        traced.dropout(x, 0.5, 2.0, traced.draw_seed_tensor())
    assert saved and all(t.numel() == 1 for t in saved)  # seed, rate, scale: no mask


def test_seed_tensor_is_the_eager_draw():
    # the same word of torch's generator, so compiled and eager masks agree under manual_seed
    for s in range(50):
        torch.manual_seed(s)
        drawn = int(traced.draw_seed_tensor())
        after = torch.rand(())
        torch.manual_seed(s)
        assert drawn == engine.draw_seed() and torch.equal(after, torch.rand(()))


def test_scalar_tensor_is_exact():
    for value in (0.095, 1 / 3, 0.1 * (1 - 7 / 20), 1.0, 0.0):
        t = traced.scalar_tensor(value)
        assert t.dtype == torch.float64 and t.ndim == 0 and t.item() == value


def test_opcheck():
    x = torch.randn(3, 17, requires_grad=True)
    args = (x, traced.scalar_tensor(0.25), traced.scalar_tensor(4 / 3), torch.tensor(5), 0)
    torch.library.opcheck(torch.ops.dropkit.philox_dropout_tseed.default, args)
    torch.library.opcheck(torch.ops.dropkit.philox_keep_mask_tseed.default,
                          ([4, 5], traced.scalar_tensor(0.25), torch.tensor(5), 0,
                           torch.device("cpu")))


def test_an_eager_seed_tensor_is_the_int_seed():
    # engine.dropout takes the seed as an int or as traced's 0-dim int64 bit pattern alike
    x = torch.randn(3, 77)
    for seed in (5, 2**63 + 9):
        seed_t = torch.tensor(seed - 2**64 if seed >= 2**63 else seed, dtype=torch.int64)
        assert torch.equal(engine.dropout(x, 0.3, 1 / 0.7, seed_t, 2),
                           engine.dropout(x, 0.3, 1 / 0.7, seed, 2))
        assert torch.equal(engine.keep_mask((4, 9), 0.3, seed_t),
                           engine.keep_mask((4, 9), 0.3, seed))


def test_compiled_int_seed_with_a_changing_rate_keeps_one_graph():
    # an explicit int seed traces the tensor-rate op too: a new p is not a new graph
    from torch._dynamo.utils import counters

    import dropkit as dk

    class Scheduled(torch.nn.Module):
        p = 0.1

        def forward(self, x):
            return dk.dropout(x, self.p, seed=7)

    torch._dynamo.reset()
    counters.clear()
    module = Scheduled()
    compiled = torch.compile(module, backend="eager")
    x = torch.randn(4, 64)
    for step in range(6):
        module.p = 0.1 + 0.03 * step
        assert torch.equal(compiled(x), dk.dropout(x, module.p, seed=7)), step
    assert counters["stats"]["unique_graphs"] <= 2  # the first p, then a symbolic one
