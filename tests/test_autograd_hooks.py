"""Post-accumulate-grad hooks and queue_callback: what data-parallel training builds on."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet as fn
from fastnet import autograd


def test_the_hook_sees_the_whole_gradient_once_per_backward() -> None:
    rng = np.random.default_rng(0)
    w = fn.tensor(rng.standard_normal(5), requires_grad=True)
    seen: list[np.ndarray] = []
    w.register_post_accumulate_grad_hook(lambda leaf: seen.append(leaf.grad.numpy().copy()))
    x = rng.standard_normal(5).astype(np.float32)
    (w * w * x + w).sum().backward()  # w reached along three paths: one call, the sum
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], 2 * w.numpy() * x + 1, rtol=1e-6)
    (w * 3).sum().backward()  # accumulates: the hook sees the running total
    np.testing.assert_allclose(seen[1], seen[0] + 3, rtol=1e-6)


def test_every_leaf_hook_runs_and_a_removed_one_no_more() -> None:
    a = fn.tensor([1.0, 2.0], requires_grad=True)
    b = fn.tensor([3.0, 4.0], requires_grad=True)
    order: list[str] = []
    handle = a.register_post_accumulate_grad_hook(lambda _: order.append("a"))
    b.register_post_accumulate_grad_hook(lambda _: order.append("b"))
    ((a * 2).exp() * b).sum().backward()
    assert sorted(order) == ["a", "b"]
    handle.remove()
    (a * b).sum().backward()
    assert sorted(order) == ["a", "b", "b"]


def test_queued_callbacks_run_after_every_gradient_is_final() -> None:
    a = fn.tensor([1.0, -2.0, 0.5], requires_grad=True)
    b = fn.tensor([3.0, 4.0, 1.5], requires_grad=True)
    events: list[str] = []

    def ready(leaf: fn.Tensor) -> None:
        events.append("grad")
        if len(events) == 1:
            autograd.queue_callback(lambda: events.append(f"done {a.grad is not None}"))

    a.register_post_accumulate_grad_hook(ready)
    b.register_post_accumulate_grad_hook(ready)
    (a * b).sum().backward()
    assert events == ["grad", "grad", "done True"]


def test_misuse_raises() -> None:
    a = fn.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="only leaf tensors that require grad"):
        (a * 2).register_post_accumulate_grad_hook(print)
    with pytest.raises(RuntimeError, match="only leaf tensors that require grad"):
        fn.tensor([1.0]).register_post_accumulate_grad_hook(print)
    with pytest.raises(TypeError, match="callable"):
        a.register_post_accumulate_grad_hook(3)
    with pytest.raises(RuntimeError, match="during a backward walk"):
        autograd.queue_callback(print)
