"""SyncBatchNorm in one process: the functional op against batch norm (values, gradients, running
statistics, finite differences), the layer against BatchNorm1d/2d, convert_sync_batchnorm, the
errors. Several ranks: tests/distributed/test_sync_batchnorm_ranks.py."""

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet import nn
from fastnet.backend import cuda_is_available
from fastnet.distributed import SingleProcess
from fastnet.gradcheck import gradcheck
from numerics import relative_error


class EmptyPeer(SingleProcess):
    """Two ranks whose other rank has an empty batch: it adds zeros to every sum, so each
    allreduce leaves the array as it is. Counts the allreduces, to show when the layer talks."""

    size = 2

    def __init__(self) -> None:
        self.reduced: list[tuple] = []

    def iallreduce(self, array, op="sum"):
        self.reduced.append((array.shape, op))
        return super().iallreduce(array, op)


def inputs(rng, shape, dtype=np.float32):
    """x far from zero mean (the statistics must not cancel), weight, bias, running statistics,
    and an upstream gradient."""
    channels = shape[1]
    x = 3.0 + 2.0 * rng.standard_normal(shape)
    weight, bias = rng.uniform(0.5, 1.5, channels), rng.standard_normal(channels)
    running = rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels)
    return [v.astype(dtype) for v in (x, weight, bias, *running, rng.standard_normal(shape))]


def run(op, values, dtype, affine=True, device="cpu", **options):
    """(y, dx, dweight, dbias, running_mean, running_var) of op on float ``dtype`` copies of
    ``values`` on ``device``, with loss sum(y·upstream)."""
    x, weight, bias, running_mean, running_var, upstream = (
        fn.tensor(v, dtype=dtype, device=device, requires_grad=i < 3) for i, v in enumerate(values)
    )
    weight, bias = (weight, bias) if affine else (None, None)
    y = op(x, running_mean, running_var, weight, bias, training=True, momentum=0.3, **options)
    (y * upstream).sum().backward()
    grads = [t.grad.numpy() for t in (x, weight, bias) if t is not None]
    return [y.numpy(), *grads, running_mean.numpy(), running_var.numpy()]


# ===================================================================== functional
@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 7), (4, 3, 5, 3), (3, 2, 3, 2, 3), (2, 1, 3)])
@pytest.mark.parametrize("group", [SingleProcess, EmptyPeer])
@pytest.mark.parametrize("affine", [True, False])
def test_sync_batch_norm_matches_batch_norm(shape, group, affine, rng):
    values = inputs(rng, shape)
    got = run(F.sync_batch_norm, values, np.float32, affine, communicator=group())
    expected = run(F.batch_norm, values, np.float64, affine)
    names = ["y", "dx"] + ["dweight", "dbias"] * affine + ["running_mean", "running_var"]
    for what, g, e in zip(names, got, expected, strict=True):
        assert g.dtype == np.float32
        assert relative_error(g, e) < 1e-5, what


def test_sync_batch_norm_is_one_allreduce_each_way(rng):
    group = EmptyPeer()
    run(F.sync_batch_norm, inputs(rng, (4, 5, 3)), np.float32, communicator=group)
    assert group.reduced == [((2, 11), "sum"), ((2, 5), "sum")]  # (size, 2C + 1), then (2, C)


def test_sync_batch_norm_statistics_do_not_cancel_far_from_zero(rng):
    """A mean 10⁴ standard deviations from zero: the merged per-rank statistics keep the
    variance where sums of x and x² would lose it to rounding."""
    x = (1e4 + rng.standard_normal((7, 3, 5))).astype(np.float32)
    running_var = fn.tensor(np.zeros(3))
    y = F.sync_batch_norm(fn.tensor(x), fn.tensor(np.zeros(3)), running_var, training=True)
    reference = x.astype(np.float64)
    variance = reference.var(axis=(0, 2), ddof=1)
    assert relative_error(running_var.numpy(), 0.1 * variance) < 1e-5
    expected = (reference - reference.mean(axis=(0, 2), keepdims=True)) / np.sqrt(
        reference.var(axis=(0, 2), keepdims=True) + 1e-5
    )
    assert relative_error(y.numpy(), expected) < 1e-3  # x itself is only float32 (2⁻²⁴·10⁴)


@pytest.mark.parametrize(("shape", "affine"), [((5, 3), True), ((3, 2, 3), True), ((4, 2), False)])
def test_sync_batch_norm_gradients(shape, affine, rng):
    x, weight, bias, running_mean, running_var, _ = inputs(rng, shape, np.float64)
    parameters = [fn.tensor(v, dtype=np.float64, requires_grad=True) for v in (weight, bias)]
    leaves = [fn.tensor(x, dtype=np.float64, requires_grad=True)] + parameters * affine

    def op(x, *parameters):
        # fresh running statistics per call: each training call updates them
        running = [fn.tensor(v, dtype=np.float64) for v in (running_mean, running_var)]
        return F.sync_batch_norm(x, *running, *parameters, training=True, communicator=EmptyPeer())

    assert gradcheck(op, leaves)


def test_sync_batch_norm_in_eval_mode_is_batch_norm_without_communication(rng):
    x, weight, bias, running_mean, running_var, _ = inputs(rng, (5, 3, 4))
    group = EmptyPeer()
    stats = [fn.tensor(v) for v in (x, running_mean, running_var, weight, bias)]
    got = F.sync_batch_norm(*stats, training=False, communicator=group).numpy()
    np.testing.assert_array_equal(got, F.batch_norm(*stats, training=False).numpy())
    assert group.reduced == []


def test_sync_batch_norm_errors(rng):
    x = fn.tensor(rng.standard_normal((4, 3, 2)))
    three = fn.tensor(np.ones(3))
    with pytest.raises(ValueError, match=r"running_mean of shape \(4,\) .* \(4, 3, 2\)"):
        F.sync_batch_norm(x, fn.tensor(np.zeros(4)), three, training=True)
    with pytest.raises(ValueError, match=r"weight of shape \(2,\) .* \(4, 3, 2\)"):
        F.sync_batch_norm(x, None, None, fn.tensor(np.ones(2)), training=True)
    with pytest.raises(TypeError, match="bias dtype float64 must match x's dtype float32"):
        F.sync_batch_norm(x, None, None, None, fn.tensor(np.ones(3), dtype=np.float64), True)
    with pytest.raises(ValueError, match="both running_mean and running_var, or neither"):
        F.sync_batch_norm(x, three, None, training=True)
    with pytest.raises(ValueError, match="momentum must be in"):
        F.sync_batch_norm(x, None, None, training=True, momentum=1.5)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.sync_batch_norm(fn.tensor(rng.standard_normal((1, 3))), None, None, training=True)
    with pytest.raises(ValueError, match=r"\(N, C\) or \(N, C, \*spatial\)"):
        F.sync_batch_norm(fn.tensor(rng.standard_normal(5)), None, None, training=True)


# ===================================================================== the layer
@pytest.mark.parametrize(
    ("layer", "shape"),
    [(nn.BatchNorm1d, (5, 3)), (nn.BatchNorm1d, (3, 3, 7)), (nn.BatchNorm2d, (3, 3, 5, 3))],
)
@pytest.mark.parametrize("group", [None, EmptyPeer])
def test_layer_trains_and_evaluates_as_batchnorm(layer, shape, group, rng):
    """Three training steps (values, gradients, running statistics), then eval: as BatchNorm;
    with one rank (None: the process group) or on the synchronised path (EmptyPeer)."""
    communicator = None if group is None else group()
    ours = nn.SyncBatchNorm(3, momentum=0.2, process_group=communicator)
    theirs = layer(3, momentum=0.2)
    weight, bias = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)
    for module in (ours, theirs):
        module.weight.data[...], module.bias.data[...] = weight, bias
    for _ in range(3):
        x, *_, upstream = inputs(rng, shape)
        results = []
        for module in (ours, theirs):
            module.zero_grad()
            tensor = fn.tensor(x, requires_grad=True)
            y = module(tensor)
            (y * fn.tensor(upstream)).sum().backward()
            results.append([y, tensor.grad, module.weight.grad, module.bias.grad])
        for got, expected in zip(*results, strict=True):
            assert relative_error(got.numpy(), expected.numpy()) < 1e-5
    for name, value in theirs.state_dict().items():
        assert relative_error(ours.state_dict()[name], value) < 1e-6, name
    if communicator is not None:
        assert len(communicator.reduced) == 6  # one allreduce each way per step
    x = fn.tensor(inputs(rng, shape)[0])
    for module in (ours, theirs):
        module.eval()
    assert relative_error(ours(x).numpy(), theirs(x).numpy()) < 1e-6  # running stats' rounding
    if communicator is not None:
        assert len(communicator.reduced) == 6  # eval mode does not talk


def test_layer_with_frozen_statistics_does_not_communicate(rng):
    group = EmptyPeer()
    layer = nn.SyncBatchNorm(2, process_group=group)
    layer.freeze_statistics = True
    x = fn.tensor(inputs(rng, (5, 2, 3))[0])
    layer(x).sum().backward()
    assert group.reduced == [] and layer.num_batches_tracked.item() == 0
    assert layer.weight.grad is not None  # the affine part still trains
    np.testing.assert_array_equal(layer(x).numpy(), layer.eval()(x).numpy())


def test_layer_accepts_any_spatial_rank_and_has_batchnorms_state(rng):
    layer = nn.SyncBatchNorm(3, momentum=None, process_group=EmptyPeer())
    assert list(layer.state_dict()) == list(nn.BatchNorm2d(3).state_dict())
    x = inputs(rng, (3, 3, 2, 3, 2))[0]
    running = fn.tensor(np.zeros(3), dtype=np.float64), fn.tensor(np.ones(3), dtype=np.float64)
    expected = F.batch_norm(fn.tensor(x, dtype=np.float64), *running, training=True, momentum=1.0)
    assert relative_error(layer(fn.tensor(x)).numpy(), expected.numpy()) < 1e-5
    for name, value in zip(("running_mean", "running_var"), running, strict=True):
        # momentum=None: the cumulative average, so after one batch the batch's statistics
        assert relative_error(getattr(layer, name).numpy(), value.numpy()) < 1e-5
    assert "SyncBatchNorm(3, eps=1e-05, momentum=None" in repr(layer)


def test_layer_errors_are_batchnorms(rng):
    with pytest.raises(
        ValueError, match=r"SyncBatchNorm: expected input \(N, C, \*spatial\), got shape \(4,\)"
    ):
        nn.SyncBatchNorm(4)(fn.tensor(rng.standard_normal(4)))
    with pytest.raises(
        ValueError, match=r"SyncBatchNorm\(3\): input of shape \(4, 5\) has 5 channels, expected 3"
    ):
        nn.SyncBatchNorm(3)(fn.tensor(rng.standard_normal((4, 5))))
    with pytest.raises(ValueError, match="momentum must be in"):
        nn.SyncBatchNorm(3, momentum=-0.5)
    layer = nn.SyncBatchNorm(3)  # one rank (with more, the global count is never read)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(fn.tensor(rng.standard_normal((1, 3))))
    assert layer.num_batches_tracked.item() == 0  # a refused batch is not counted


# ===================================================================== convert_sync_batchnorm
class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3, momentum=0.3, eps=1e-3)
        self.tail = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 5, 5), nn.BatchNorm1d(5))

    def forward(self, x):
        return self.tail(self.norm(self.conv(x)).relu())


def test_convert_sync_batchnorm_keeps_weights_buffers_and_settings(rng):
    model = nn.Sequential(Block(), nn.ReLU(), nn.BatchNorm1d(5, affine=False))
    x = fn.tensor(rng.standard_normal((5, 2, 4, 5)))
    model(x)  # running statistics away from their initial values
    for parameter in model.parameters():
        parameter.data[...] = rng.standard_normal(parameter.shape)
    model[0].tail[2].freeze_statistics = True
    model.eval()
    expected = model(x).numpy()
    model[2].train()
    before = {name: value.copy() for name, value in model.state_dict().items()}
    parameters = list(model.parameters())

    group = EmptyPeer()
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=group)
    assert converted is model  # a container is converted in place
    norms = [converted[0].norm, converted[0].tail[2], converted[2]]
    assert all(type(m) is nn.SyncBatchNorm and m.process_group is group for m in norms)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in converted.modules())
    assert [(m.eps, m.momentum, m.affine, m.training) for m in norms] == [
        (1e-3, 0.3, True, False),
        (1e-5, 0.1, True, False),
        (1e-5, 0.1, False, True),
    ]
    assert [m.freeze_statistics for m in norms] == [False, True, False]
    assert all(a is b for a, b in zip(converted.parameters(), parameters, strict=True))
    after = converted.state_dict()
    assert list(after) == list(before)
    assert all(np.array_equal(after[name], value) for name, value in before.items())
    converted[2].eval()
    np.testing.assert_array_equal(converted(x).numpy(), expected)


def test_convert_sync_batchnorm_of_a_bare_layer_returns_a_new_one():
    layer = nn.BatchNorm1d(4, affine=False, track_running_stats=False)
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(layer)
    assert type(converted) is nn.SyncBatchNorm and converted is not layer
    assert converted.weight is None and converted.running_mean is None
    assert converted.process_group is None
    relu = nn.ReLU()
    assert nn.SyncBatchNorm.convert_sync_batchnorm(relu) is relu


@pytest.mark.skipif(not cuda_is_available(), reason="needs the cuda device (GPU or simulator)")
def test_sync_batch_norm_on_cuda_matches_cpu(rng):
    values = inputs(rng, (5, 3, 4))
    got = run(F.sync_batch_norm, values, np.float32, device="cuda", communicator=EmptyPeer())
    expected = run(F.sync_batch_norm, values, np.float32, communicator=EmptyPeer())
    for g, e in zip(got, expected, strict=True):
        assert relative_error(g, e) < 1e-6
