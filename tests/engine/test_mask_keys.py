"""dk.mask_keys: a sample's mask depends on its keys only, so batching does not change training.

No mocks: real layers, real autograd, real torch.utils.checkpoint and a real
two-process DistributedDataParallel run over gloo.
"""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import dropkit as dk
from dropkit import functional as F

SEED, STEP = 1234, 17


def _layers():
    """Each layer family with an input it takes, and the batch dim of that input."""
    g = torch.Generator().manual_seed(0)
    img = torch.randn(8, 3, 9, 9, generator=g)
    vol = torch.randn(8, 2, 5, 5, 5, generator=g)
    seq = torch.randn(8, 6, 5, generator=g)
    return [
        (dk.Dropout(0.4), img, 0),
        (dk.Dropout1d(0.4), seq, 0),
        (dk.Dropout2d(0.4), img, 0),
        (dk.Dropout3d(0.4), vol, 0),
        (dk.DropPath(0.4), img, 0),
        (dk.StochasticDepth(0.4, "row"), img, 0),
        (dk.DropBlock2d(0.3, 3), img, 0),
        (dk.DropBlock3d(0.3, 2), vol, 0),
        (dk.AlphaDropout(0.3), img, 0),
        (dk.FeatureAlphaDropout(0.3), img, 0),
        (dk.GaussianDropout(0.3), img, 0),
        (dk.LockedDropout(0.4), seq.transpose(0, 1).contiguous(), 1),  # (T, N, H)
        (dk.LockedDropout(0.4, batch_first=True), seq, 0),
    ]


@pytest.mark.parametrize("index", range(len(_layers())))
def test_a_sample_gets_its_mask_whatever_the_batch(index):
    layer, x, dim = _layers()[index]
    layer.train()
    n = x.shape[dim]
    ids = torch.arange(100, 100 + n)
    with dk.mask_keys(SEED, STEP, ids):
        full = layer(x)
    # the same samples reversed, and a batch of three of them among strangers
    order = torch.arange(n).flip(0)
    with dk.mask_keys(SEED, STEP, ids[order]):
        flipped = layer(x.index_select(dim, order))
    assert torch.equal(flipped, full.index_select(dim, order))
    pick = torch.tensor([5, 1, 6])
    strangers = torch.randn_like(x.index_select(dim, pick))
    mixed = torch.cat([strangers, x.index_select(dim, pick)], dim)
    with dk.mask_keys(SEED, STEP, torch.cat([torch.tensor([900, 901, 902]), ids[pick]])):
        out = layer(mixed)
    assert torch.equal(out.narrow(dim, 3, 3), full.index_select(dim, pick))
    # another step, another mask
    with dk.mask_keys(SEED, STEP + 1, ids):
        assert not torch.equal(layer(x), full)


def test_concrete_dropout_is_keyed_too():
    layer = dk.ConcreteDropout(p_init=0.3)
    x = torch.randn(6, 10)
    with dk.mask_keys(SEED, STEP, torch.arange(6)):
        full = layer(x)
    with dk.mask_keys(SEED, STEP, torch.tensor([4, 5])):
        part = layer(x[4:])
    assert torch.equal(part, full[4:])


def test_call_index_counts_draws_in_a_forward_pass():
    x = torch.ones(4, 64)
    with dk.mask_keys(SEED, STEP):
        first, second = dk.dropout(x, 0.5), dk.dropout(x, 0.5)
    assert not torch.equal(first, second)  # two calls, two masks
    with dk.mask_keys(SEED, STEP):  # re-entering restarts at call 0
        assert torch.equal(dk.dropout(x, 0.5), first)
        dk.dropout(x, 0.5, training=False)  # draws nothing, takes no index
        assert torch.equal(dk.dropout(x, 0.5), second)


def test_backward_regenerates_the_forward_mask_and_saves_nothing():
    x = torch.randn(5, 300, dtype=torch.float64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        with dk.mask_keys(SEED, STEP):
            y = dk.dropout(x, 0.3)
            z = dk.drop_path(x, 0.3)
            dk.dropout(x, 0.3)  # later draws must not disturb the backward of the first
    assert saved == []
    (y.sum() + z.sum()).backward()  # outside the block: the keys were taken at forward time
    keep_y, keep_z = y != 0, (z != 0).any(1, keepdim=True)
    expected = keep_y.double() * (1 / 0.7) + keep_z.double() * (1 / 0.7)
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=1e-14)


def test_outside_the_block_nothing_changes():
    x = torch.randn(4, 100)
    torch.manual_seed(3)
    before = dk.dropout(x, 0.5)
    with dk.mask_keys(SEED, STEP):
        dk.dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(dk.dropout(x, 0.5), before)  # keyed draws take nothing from torch's RNG


def test_batch_shared_masks_are_refused_with_the_reason():
    with dk.mask_keys(SEED, STEP):
        with pytest.raises(ValueError, match="weights shared by the whole batch"):
            dk.WeightDrop(nn.Linear(3, 3))(torch.randn(2, 3))
        with pytest.raises(ValueError, match="vocabulary"):
            dk.EmbeddingDropout(nn.Embedding(10, 3))(torch.tensor([1, 2]))
        with pytest.raises(ValueError, match="whole batch"):
            dk.DropPath(0.2, mode="batch")(torch.randn(2, 3))
        with pytest.raises(ValueError, match="unbatched"):
            F.dropblock2d(torch.randn(3, 8, 8), 0.2, 3)  # (C, H, W): no batch dim
        with pytest.raises(ValueError, match="sample ids"):
            with dk.mask_keys(SEED, STEP, torch.arange(3)):
                dk.dropout(torch.randn(4, 2), 0.5)
    with pytest.raises(ValueError, match="step"):
        dk.mask_keys(SEED, 2**32)


def _model(dtype=torch.float64):
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.block = dk.DropBlock2d(0.2, 3)
            self.channels = dk.Dropout2d(0.2)
            self.fc = nn.Linear(4 * 8 * 8, 16)
            self.drop = dk.Dropout(0.3)
            self.branch = nn.Linear(16, 16)
            self.path = dk.DropPath(0.3)
            self.noise = dk.GaussianDropout(0.1)
            self.head = nn.Linear(16, 5)

        def forward(self, x):
            h = self.channels(self.block(torch.relu(self.conv(x))))
            h = self.drop(torch.relu(self.fc(h.flatten(1))))
            h = h + self.path(torch.tanh(self.branch(h)))
            return self.head(self.noise(h))

    return Net().to(dtype).train()


def _data(n=10, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=g, dtype=dtype), torch.randint(0, 5, (n,),
                                                                            generator=g)


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _full_batch_grads(x, y, ids):
    model = _model()
    with dk.mask_keys(SEED, STEP, ids):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return _grads(model)


def test_gradient_accumulation_equals_the_full_batch():
    x, y = _data()
    ids = torch.arange(1000, 1010)
    full = _full_batch_grads(x, y, ids)
    model = _model()
    for part in (slice(0, 3), slice(3, 4), slice(4, 10)):  # uneven micro-batches
        with dk.mask_keys(SEED, STEP, ids[part]):
            loss = nn.functional.cross_entropy(model(x[part]), y[part], reduction="sum") / len(x)
        loss.backward()
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, full[name], rtol=1e-10, atol=1e-12)
    # and the keys matter: another step gives other gradients
    model = _model()
    with dk.mask_keys(SEED, STEP + 1, ids):
        nn.functional.cross_entropy(model(x), y).backward()
    assert not torch.allclose(model.fc.weight.grad, full["fc.weight"])


def test_activation_checkpointing_recomputes_the_same_masks():
    from torch.utils.checkpoint import checkpoint

    x, y = _data()
    ids = torch.arange(10)
    full = _full_batch_grads(x, y, ids)
    model = _model()

    def trunk(inp):  # fc saves its input, so the recompute runs through the masks
        h = model.channels(model.block(torch.relu(model.conv(inp))))
        return model.drop(torch.relu(model.fc(h.flatten(1))))

    with dk.mask_keys(SEED, STEP, ids):
        h = checkpoint(trunk, x, use_reentrant=False, context_fn=dk.mask_keys.checkpoint_context)
        h = h + model.path(torch.tanh(model.branch(h)))
        loss = nn.functional.cross_entropy(model.head(model.noise(h)), y)
    loss.backward()  # the recompute runs here, after the block has closed
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, full[name], rtol=1e-10, atol=1e-12)

    # without the context_fn a recompute inside the block would count calls again: refused
    model = _model()
    with dk.mask_keys(SEED, STEP, ids):
        loss = checkpoint(trunk, x, use_reentrant=False).sum()
        with pytest.raises(RuntimeError, match="checkpoint_context"):
            loss.backward()


def _mc_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), dk.Dropout(0.3), nn.Linear(32, 32),
                         dk.DropPath(0.2), dk.WeightDrop(nn.Linear(32, 4), p=0.2))


def test_mc_consistent_does_not_depend_on_chunking():
    model = _mc_model()
    x = torch.randn(9, 6, generator=torch.Generator().manual_seed(2))
    x[4] = x[1]
    whole = dk.mc.predict(model, x, samples=6, consistent=True, seed=7, return_samples=True)
    chunked = dk.mc.predict(model, x, samples=6, consistent=True, seed=7, batch_size=4,
                            return_samples=True)
    torch.testing.assert_close(chunked.samples, whole.samples, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(chunked.mean, whole.mean, rtol=1e-6, atol=1e-7)
    # one mask per sample j shared by every input: equal inputs, equal samples
    torch.testing.assert_close(whole.samples[:, 4], whole.samples[:, 1], rtol=0, atol=0)
    assert not torch.allclose(whole.samples[0], whole.samples[1])  # but samples differ
    alone = dk.mc.predict(model, x[1:2], samples=6, consistent=True, seed=7, return_samples=True)
    torch.testing.assert_close(alone.samples[:, 0], whole.samples[:, 1], rtol=1e-6, atol=1e-7)


def test_mc_consistent_enlarged_batch_equals_one_pass_per_sample():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), dk.Dropout(0.3), nn.Linear(32, 4))
    x = torch.randn(5, 6)
    one = dk.mc.predict(model, x, samples=4, consistent=True, seed=3, return_samples=True)
    big = dk.mc.predict(model, x, samples=4, consistent=True, seed=3, batch_size=20,
                        return_samples=True)
    torch.testing.assert_close(big.samples, one.samples, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------
# A real two-process DistributedDataParallel run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = DistributedDataParallel(_model())
        x, y = _data()
        ids = torch.arange(1000, 1010)
        half = slice(rank * 5, rank * 5 + 5)  # this rank's half, with its global ids
        with dk.mask_keys(SEED, STEP, ids[half]):
            loss = nn.functional.cross_entropy(model(x[half]), y[half])
        loss.backward()  # DDP averages the two ranks' gradients: the full batch's mean
        if rank == 0:
            torch.save(_grads(model.module), os.path.join(out_dir, "grads.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_equal_the_full_batch(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "grads.pt")
    x, y = _data()
    full = _full_batch_grads(x, y, torch.arange(1000, 1010))
    for name, grad in full.items():
        torch.testing.assert_close(ddp[name], grad, rtol=1e-10, atol=1e-12)


def test_bias_dropout_add_is_keyed_inside_the_context():
    """The fused op falls back to the keyed sequence: a sample's output does not
    depend on its position in the batch."""
    x = torch.randn(6, 40)
    bias = torch.randn(40)
    residual = torch.randn(6, 40)
    ids = torch.arange(6)
    with dk.mask_keys(seed=3, step=0, sample_ids=ids):
        full = dk.bias_dropout_add(x, bias, residual, 0.5)
    order = torch.tensor([5, 2, 0])
    with dk.mask_keys(seed=3, step=0, sample_ids=ids[order]):
        part = dk.bias_dropout_add(x[order], bias, residual[order], 0.5)
    assert torch.equal(part, full[order])
    with dk.mask_keys(seed=3, step=0, sample_ids=ids):
        seq = residual + dk.dropout(x + bias, 0.5)
    assert torch.equal(seq, full)


@pytest.mark.parametrize("compiled_outside_first", [False, True])
def test_inside_torch_compile_keyed_calls_run_eagerly_with_the_eager_masks(
        compiled_outside_first):
    # each keyed call is a graph break; the frame runs again eagerly and takes
    # the keys there (before this, dynamo traced into the Numba kernels and failed)
    def body(x):
        return F.dropout(x, 0.3) * 2 + F.drop_path(x, 0.5) + F.dropout(x, 0.6)

    torch._dynamo.reset()
    compiled = torch.compile(body, backend="eager")
    x = torch.randn(8, 16, requires_grad=True)
    if compiled_outside_first:
        compiled(x)
    outputs, grads = [], []
    for fn in (compiled, body):
        with dk.mask_keys(seed=3, step=1, sample_ids=torch.arange(8)):
            y = fn(x)
        y.sum().backward()
        outputs.append(y.detach())
        grads.append(x.grad)
        x.grad = None
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(grads[0], grads[1])
    with dk.mask_keys(seed=4, step=1, sample_ids=torch.arange(8)):
        assert not torch.equal(body(x), outputs[1])  # the keys decide the masks


def test_fullgraph_compile_refuses_keyed_calls_with_the_reason():
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: F.dropout(x, 0.3), backend="eager", fullgraph=True)
    with dk.mask_keys(seed=3, step=0, sample_ids=torch.arange(4)):
        with pytest.raises(Exception, match="graph break each"):
            compiled(torch.randn(4, 8))


def _row_wise(t):
    return torch.tanh(1.5 * t) - 0.25 * t  # element-wise: a row is computed alike in any batch


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_residual_drop_path_is_keyed_and_equals_drop_path(p):
    x = torch.randn(12, 5, 7)
    ids = torch.arange(100, 112)
    with dk.mask_keys(seed=5, step=2, sample_ids=ids):
        fused = F.residual_drop_path(x, _row_wise, p)
        second = F.residual_drop_path(x, _row_wise, p)  # the next call index: other decisions
    with dk.mask_keys(seed=5, step=2, sample_ids=ids):
        unfused = x + F.drop_path(_row_wise(x), p)
    assert torch.equal(fused, unfused)
    assert not torch.equal(fused, second)
    # a sample's decision is its own, whatever the other samples of the batch
    part = [3, 8, 10]
    with dk.mask_keys(seed=5, step=2, sample_ids=ids[part]):
        alone = F.residual_drop_path(x[part], _row_wise, p)
    assert torch.equal(alone, fused[part])


def test_mc_consistent_takes_a_model_with_residual_drop_path():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16),
                          dk.ResidualDropPath(nn.Sequential(nn.Tanh(), nn.Linear(16, 16)), 0.5),
                          nn.Linear(16, 3))
    x = torch.randn(7, 6)
    whole = dk.mc.predict(model, x, samples=8, consistent=True, seed=3, return_samples=True)
    chunked = dk.mc.predict(model, x, samples=8, consistent=True, seed=3, batch_size=3,
                            return_samples=True)
    torch.testing.assert_close(chunked.samples, whole.samples, rtol=1e-6, atol=1e-7)
    # the block is kept for some MC samples and skipped for others
    spread = whole.samples.std(dim=0)
    assert bool((spread > 0).all())


def test_residual_drop_path_takes_a_0d_input_with_a_shared_id_as_drop_path_does():
    x = torch.tensor(0.75)
    with dk.mask_keys(seed=1, step=0, sample_ids=7):
        fused = F.residual_drop_path(x, _row_wise, 0.5)
    with dk.mask_keys(seed=1, step=0, sample_ids=7):
        unfused = x + F.drop_path(_row_wise(x), 0.5)
    assert torch.equal(fused, unfused)
