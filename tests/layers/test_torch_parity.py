"""dropkit's dropout layers and functionals side by side with torch's own.

The behaviours PyTorch's ``test/nn/test_dropout.py`` checks, each run on torch
and on dropkit in the same test: signatures, accepted ranks and how they are
read (which dims share a keep decision), warnings, exception types, the
memory format of outputs and gradients, eval-mode identity, type checks.
"""

from __future__ import annotations

import inspect
import itertools
import pickle
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as TF

import dropkit as dk

FUNCTIONALS = ["dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
               "feature_alpha_dropout"]
MODULES = ["Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
           "FeatureAlphaDropout"]
EXTRAS = {"inverted", "seed"}  # dropkit's own, keyword-only


def _public_params(fn):
    return [(q.name, q.kind, q.default) for q in inspect.signature(fn).parameters.values()
            if q.name not in EXTRAS]


@pytest.mark.parametrize("name", FUNCTIONALS)
def test_functional_signature_is_torchs(name):
    assert _public_params(getattr(dk, name)) == _public_params(getattr(TF, name))
    extras = [q for q in inspect.signature(getattr(dk, name)).parameters.values()
              if q.name in EXTRAS]
    assert all(q.kind is inspect.Parameter.KEYWORD_ONLY for q in extras)


@pytest.mark.parametrize("name", MODULES)
def test_module_is_a_torch_module_of_the_same_kind(name):
    ours, theirs = getattr(dk, name), getattr(nn, name)
    assert issubclass(ours, theirs)
    assert _public_params(ours.__init__) == _public_params(theirs.__init__)
    assert _public_params(ours.forward) == _public_params(theirs.forward)
    m = ours(0.3, True)
    assert (m.p, m.inplace) == (0.3, True)
    assert repr(m).startswith(f"{name}(p=0.3, inplace=True")
    clone = pickle.loads(pickle.dumps(m))
    assert type(clone) is ours and clone.p == 0.3 and m.state_dict() == {}
    with pytest.raises(ValueError, match="p=1.5"):
        ours(1.5)


def _shared_dims(y: torch.Tensor) -> tuple[bool, ...]:
    """For each dim, whether y is constant along it (the mask broadcasts over it)."""
    return tuple(bool((y == y.narrow(d, 0, 1)).all()) for d in range(y.ndim))


def _call(lib, name, x, p=0.5, training=True):
    fn = getattr(lib, name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            y = fn(x, p, training=training)
        except RuntimeError as exc:
            return ("RuntimeError", None, [str(w.message)[:40] for w in caught], str(exc)[:9])
    return ("ok", _shared_dims(y), [str(w.message)[:40] for w in caught], None)


@pytest.mark.parametrize("ndim", range(0, 7))
@pytest.mark.parametrize("name", FUNCTIONALS)
def test_every_rank_is_read_as_torch_reads_it(name, ndim):
    torch.manual_seed(0)
    x = torch.ones((6,) * ndim)  # 6 per dim: a shared decision is clear, a chance tie is not
    ours, theirs = _call(dk, name, x), _call(TF, name, x)
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]  # the same dims share a keep decision
    assert ours[2] == theirs[2]  # the same warnings, in the same order


@pytest.mark.parametrize("p,training", [(0.5, False), (1.0, True)], ids=["eval", "p=1"])
@pytest.mark.parametrize("ndim", range(0, 7))
@pytest.mark.parametrize("name", FUNCTIONALS)
def test_eval_and_p1_accept_the_ranks_torch_accepts(name, ndim, p, training):
    # torch checks the rank of a feature-dropout input only when it draws a mask
    x = torch.ones((6,) * ndim)
    ours, theirs = _call(dk, name, x, p, training), _call(TF, name, x, p, training)
    assert ours[:3] == theirs[:3]


def test_dropout2d_reads_a_3d_input_as_n_c_l():
    x = torch.ones(8, 8, 8)
    with pytest.warns(UserWarning, match=r"interpreted as shape \(N, C, L\)"):
        y = dk.dropout2d(x, 0.5)
    assert _shared_dims(y) == (False, False, True)


@pytest.mark.parametrize("name", MODULES)
def test_eval_and_p0_return_the_input_object(name):
    for shape in [(4, 3, 5), (2, 4, 3, 5), (2, 2, 4, 3, 5)]:
        x = torch.randn(shape)
        for inplace in (False, True):
            same = []
            for lib in (nn, dk):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        m = getattr(lib, name)(0.5, inplace).eval()
                        same.append((m(x) is x, getattr(lib, name)(0.0, inplace)(x) is x))
                    except RuntimeError:
                        same.append("error")
            assert same[0] == same[1], shape
    empty = torch.empty(0, 3)
    assert dk.Dropout(0.5)(empty) is empty


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("name", MODULES)
def test_discontiguous_input_keeps_its_memory_format(name, memory_format):
    if name == "Dropout1d":
        pytest.skip("Dropout1d refuses 4D inputs (torch's and dropkit's alike)")
    # torch's _test_dropout_discontiguous: p close to 0 keeps the data, and the output
    # is dense in the input's memory format
    for p in (0.0, 1e-10):
        x = torch.empty(2, 3, 3, 6, memory_format=memory_format)[..., ::2]
        x.copy_(torch.ones(2, 3, 3, 3))
        for lib in (nn, dk):
            m = getattr(lib, name)(p)
            if "Alpha" in name:
                continue  # alpha dropout shifts kept values: checked below on formats only
            out = m(x)
            if p != 0:
                assert out.is_contiguous(memory_format=memory_format), (lib.__name__, p)
            assert torch.equal(out, x)


@pytest.mark.parametrize("name", MODULES)
def test_output_and_gradient_memory_format_follow_torch(name):
    if name == "Dropout1d":
        pytest.skip("Dropout1d refuses 4D inputs (torch's and dropkit's alike)")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    strides = []
    for lib in (nn, dk):
        leaf = x.clone().requires_grad_()
        y = getattr(lib, name)(0.5)(leaf)
        y.backward(torch.ones_like(y))
        strides.append((y.stride(), leaf.grad.stride()))
    assert strides[0] == strides[1]


def _invert(perm):
    return sorted(range(len(perm)), key=lambda i: perm[i])


@pytest.mark.parametrize("name", ["Dropout", "AlphaDropout"])
def test_any_permutation_and_shift_keeps_its_layout_and_mean(name):
    # torch's _test_dropout_stride_mean_preserve, on dropkit's module
    torch.manual_seed(0)
    inp = torch.ones(2, 3, 4, 5)
    for perm in itertools.permutations(range(4)):
        for shift in range(4):
            for p in (1e-10, 0.3, 0.5, 0.7):
                x = inp.permute(perm).contiguous().permute(_invert(perm))[shift:]
                m = getattr(dk, name)(p)
                out = m(x)
                ref = getattr(nn, name)(p)(x)
                assert out.stride() == ref.stride() or out.permute(perm).is_contiguous()
                if x.numel() == 0:
                    continue
                if name == "Dropout":
                    assert abs(out.mean().item() - 1.0) <= 1.0
                    assert torch.equal(out, x) == (p == 1e-10)


def test_dropkit_layers_are_found_by_type_based_code():
    model = nn.Sequential(nn.Linear(4, 4), dk.Dropout(0.1), dk.Dropout2d(0.2),
                          dk.AlphaDropout(0.1), dk.FeatureAlphaDropout(0.1))
    found = [m for m in model.modules() if isinstance(m, nn.Dropout | nn.Dropout2d
                                                    | nn.AlphaDropout | nn.FeatureAlphaDropout)]
    assert len(found) == 4
    assert all(dk.mc.is_dropout(m) for m in found)


@pytest.mark.parametrize("name", ["feature_alpha_dropout", "alpha_dropout"])
def test_alpha_variants_keep_selu_moments(name):
    # mean 0 / variance 1 in, mean 0 / variance 1 out (Klambauer et al.); n = 2**18
    # samples: standard errors ~0.002 (mean) and ~0.003 (variance); feature dropout
    # shares decisions over 64 elements, so its effective n is 64x smaller.
    torch.manual_seed(3)
    x = torch.randn(64, 64, 64)
    y = getattr(dk, name)(x, 0.2, training=True)
    tol = 0.1 if name.startswith("feature") else 0.02
    assert abs(y.mean().item()) < tol and abs(y.var().item() - 1.0) < tol


@pytest.mark.parametrize("name,shape", [("Dropout1d", (50, 2)), ("Dropout3d", (50, 2, 2, 2))])
@pytest.mark.parametrize("inplace", [False, True])
def test_unbatched_input_gets_the_mask_of_its_batched_form(name, shape, inplace):
    # torch's _test_dropoutNd_no_batch: with the same generator state, an unbatched
    # input and the same input with a batch dim of 1 get the same result
    x = torch.rand(shape)
    state = torch.get_rng_state()
    alone = getattr(dk, name)(0.5, inplace)(x.clone())
    torch.set_rng_state(state)
    batched = getattr(dk, name)(0.5, inplace)(x.clone().unsqueeze(0)).squeeze(0)
    assert torch.equal(alone, batched)
    assert 0 < (alone == 0).sum() < alone.numel()


@pytest.mark.parametrize("name,shape,memory_format", [
    ("Dropout", (1000,), torch.contiguous_format),
    ("Dropout1d", (12, 11, 13), torch.contiguous_format),
    ("Dropout2d", (1000, 3, 4, 5), torch.channels_last),
    ("Dropout3d", (1000, 3, 2, 4, 5), torch.contiguous_format),
])
def test_mean_and_gradient_mean_as_torch_checks_them(name, shape, memory_format):
    # torch's _test_dropout: input filled with 1 - p, output and gradient means within 0.05
    torch.manual_seed(0)
    p = 0.2
    source = torch.empty(shape).fill_(1 - p)
    for inplace in (False, True):
        leaf = source.clone(memory_format=memory_format).requires_grad_()
        out = getattr(dk, name)(p, inplace)(leaf + 0 if inplace else leaf)
        assert out.is_contiguous(memory_format=memory_format)
        assert abs(out.mean().item() - (1 - p)) < 0.05
        out.backward(source)
        assert leaf.grad.is_contiguous(memory_format=memory_format)
        assert abs(leaf.grad.mean().item() - (1 - p)) < 0.05
