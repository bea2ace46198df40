"""Backward regenerates the mask: gradient = mask * scale, nothing saved per element."""

import pytest
import torch

from dropkit import engine


def _saved_tensors(fn):
    """Every tensor autograd packs for backward while running ``fn``."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, saved


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_gradient_is_mask_times_scale(dtype):
    p, scale, seed, offset = 0.3, 1 / 0.7, 77, 9
    x = torch.randn(4, 257, dtype=dtype, requires_grad=True)
    grad = torch.randn(4, 257, dtype=dtype)
    engine.dropout(x, p, scale, seed, offset).backward(grad)
    keep = engine.keep_mask(x.shape, p, seed, offset)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    scaled = (grad.to(compute) * torch.tensor(scale, dtype=compute)).to(dtype)
    expected = torch.where(keep, scaled, torch.zeros((), dtype=dtype))
    assert torch.equal(x.grad, expected)


def test_gradient_matches_torch_autograd_of_the_reference_formula():
    x = torch.randn(1000, dtype=torch.float64, requires_grad=True)
    keep = engine.keep_mask(x.shape, 0.5, seed=4)
    (engine.dropout(x, 0.5, 2.0, seed=4) ** 2).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    (torch.where(keep, x2 * 2.0, 0.0) ** 2).sum().backward()
    assert torch.allclose(x.grad, x2.grad, rtol=0, atol=0)


def test_no_per_element_tensor_is_saved_for_backward():
    x = torch.randn(3, 1000, requires_grad=True)
    y, saved = _saved_tensors(lambda: engine.dropout(x, 0.5, 2.0, seed=1))
    assert saved == []
    y.sum().backward()
    # torch's own dropout keeps a full mask, which is what this test would catch
    _, torch_saved = _saved_tensors(lambda: torch.nn.functional.dropout(x, 0.5))
    assert sum(t.numel() for t in torch_saved) >= x.numel()


@pytest.mark.slow
def test_double_backward_is_the_same_linear_map():
    x = torch.randn(16, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: engine.dropout(t, 0.5, 2.0, seed=3), (x,))
    torch.autograd.gradgradcheck(lambda t: engine.dropout(t, 0.5, 2.0, seed=3), (x,))


def test_opcheck():
    x = torch.randn(3, 17, requires_grad=True)
    torch.library.opcheck(torch.ops.dropkit.philox_dropout.default, (x, 32768, 2.0, 5, 0))


@pytest.mark.slow
def test_torch_compile_fullgraph_forward_and_backward():
    def f(x):
        return engine.dropout(x * 3.0, 0.5, 2.0, seed=2**64 - 5, offset=2**40).sin()

    compiled = torch.compile(f, fullgraph=True, backend="inductor")
    x = torch.randn(8, 33, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y2 = compiled(x), f(x2)
    # same mask exactly; inductor's sin may differ from eager's in the last bit
    assert torch.equal(y == 0, y2 == 0)
    torch.testing.assert_close(y, y2)
    y.sum().backward()
    y2.sum().backward()
    assert torch.equal(x.grad == 0, x2.grad == 0)
    torch.testing.assert_close(x.grad, x2.grad)

    mask = torch.compile(lambda: engine.keep_mask((5, 7), 0.25, seed=3), fullgraph=True)()
    assert torch.equal(mask, engine.keep_mask((5, 7), 0.25, seed=3))


@pytest.mark.slow
def test_torch_compile_fullgraph_in_place():
    def f(x):
        y = x + 1.0
        engine.dropout_(y, 0.5, 2.0, seed=17, offset=3)
        return y

    x = torch.randn(4, 100)
    expected = engine.dropout(x + 1.0, 0.5, 2.0, seed=17, offset=3)
    assert torch.equal(torch.compile(f, fullgraph=True)(x), expected)


def test_in_place_on_a_non_leaf_is_recorded_by_autograd():
    w = torch.randn(64, requires_grad=True)
    y = w * 1.0
    out = engine.dropout_(y, 0.5, 2.0, seed=1)
    assert out is y and y.grad_fn is not None
    y.sum().backward()
    assert torch.equal(w.grad, (y != 0).float() * 2.0)  # the gradient of the mask just applied
