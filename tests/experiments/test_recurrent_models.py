"""The recurrent variants: the naive loop redraws its masks every step, locked once per sequence."""

from __future__ import annotations

import pytest
import torch

import dropkit as dk
from dropkit.experiments.recurrent_models import (
    RECURRENT_VARIANTS,
    GRUClassifier,
    NaiveDropoutGRU,
)

needs_recurrent_layers = pytest.mark.skipif(
    not (hasattr(dk, "LockedDropout") and hasattr(dk, "WeightDrop")),
    reason="dk.LockedDropout / dk.WeightDrop not available yet",
)


def _record_masks(module: torch.nn.Module) -> list[torch.Tensor]:
    """Keep masks (out != 0) observed where the input is non-zero, one per call."""
    masks: list[torch.Tensor] = []

    def hook(_m, args, out):
        x = args[0]
        masks.append(((out != 0) | (x == 0)).detach().clone())

    module.register_forward_hook(hook)
    return masks


def test_naive_gru_draws_a_fresh_mask_at_every_step():
    torch.manual_seed(0)
    steps, layers, p = 12, 2, 0.5
    rnn = NaiveDropoutGRU(16, 24, num_layers=layers, p=p).train()
    inputs = _record_masks(rnn.input_drop)
    states = _record_masks(rnn.state_drop)
    x = torch.randn(8, steps, 16)
    out, h = rnn(x)
    assert out.shape == (8, steps, 24) and h.shape == (layers, 8, 24)
    # one call per (step, layer) on the inputs and on the recurrent state
    assert len(inputs) == len(states) == steps * layers
    for layer in range(layers):
        per_step = inputs[layer::layers]
        # at t = 0 the state is all zeros, so its mask cannot be seen; from t = 1 it can
        per_step_state = states[layer::layers][1:]
        for masks in (per_step, per_step_state):
            flat = torch.stack([m.flatten() for m in masks]).float()
            assert 0.35 < 1 - flat.mean() < 0.65  # about p of the units dropped
            # every step's mask differs from every other step's (8 x 16+ Bernoulli(0.5)
            # entries: two equal masks by chance has probability < 2^-128)
            for i in range(len(masks)):
                for j in range(i + 1, len(masks)):
                    assert not torch.equal(masks[i], masks[j]), (layer, i, j)


def test_naive_gru_is_a_plain_gru_in_eval_mode():
    torch.manual_seed(0)
    rnn = NaiveDropoutGRU(5, 7, num_layers=2, p=0.5).eval()
    ref = torch.nn.GRU(5, 7, num_layers=2, batch_first=True)
    with torch.no_grad():
        for i, cell in enumerate(rnn.cells):
            getattr(ref, f"weight_ih_l{i}").copy_(cell.weight_ih)
            getattr(ref, f"weight_hh_l{i}").copy_(cell.weight_hh)
            getattr(ref, f"bias_ih_l{i}").copy_(cell.bias_ih)
            getattr(ref, f"bias_hh_l{i}").copy_(cell.bias_hh)
    x = torch.randn(3, 9, 5)
    out, h = rnn(x)
    want, want_h = ref(x)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(h, want_h)


@needs_recurrent_layers
def test_locked_variant_uses_one_mask_per_sequence():
    torch.manual_seed(0)
    model = GRUClassifier("locked", 0.5, 10, embed=16, hidden=16, layers=2).train()
    recorded = [_record_masks(m) for m in model.locked]
    model(torch.randn(6, 20))
    for masks in recorded:
        assert len(masks) == 1  # one call per forward, over the whole sequence
        mask = masks[0]  # (N, T, C)
        assert mask.shape[:2] == (6, 20)
        # the same mask at every step of a sequence ...
        assert torch.equal(mask, mask[:, :1].expand_as(mask))
        # ... but not the same for every sequence, and about half the units dropped
        assert not torch.equal(mask[0, 0], mask[1, 0])
        assert 0.3 < 1 - mask[:, 0].float().mean() < 0.7


@pytest.mark.parametrize("variant", RECURRENT_VARIANTS)
def test_every_variant_classifies_and_backpropagates(variant):
    if variant in ("locked", "weightdrop") and not hasattr(dk, "LockedDropout"):
        pytest.skip("dk.LockedDropout / dk.WeightDrop not available yet")
    torch.manual_seed(0)
    model = GRUClassifier(variant, 0.3, 10, embed=8, hidden=12, layers=2).train()
    x = torch.randn(5, 40)
    logits = model(x)
    assert logits.shape == (5, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))  # deterministic in eval


def test_unknown_variant_lists_the_choices():
    with pytest.raises(ValueError, match="none, naive, locked, weightdrop, between-layers"):
        GRUClassifier("zoneout", 0.3, 10)
