"""oneDNN's products with packed weights: the same function as ``nn.Linear`` and its activation, packed once per
weight, and plain ``F.linear`` where oneDNN's private operators are unavailable."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segvlm.segmentation import onednn

needs_onednn = pytest.mark.skipif(not onednn.available(), reason="oneDNN's fused products are not available here")


def _layer(seed: int = 0) -> tuple[torch.nn.Linear, torch.Tensor]:
    torch.manual_seed(seed)
    layer = torch.nn.Linear(32, 48).to(torch.bfloat16)
    return layer, torch.randn(2, 70, 32).to(torch.bfloat16)


@needs_onednn
@pytest.mark.parametrize("post_op", ["none", "relu", "gelu"])
def test_packed_product_computes_the_layer_and_its_activation(post_op):
    layer, x = _layer()
    with torch.inference_mode():
        out = onednn.linear(layer, x, post_op)
        activation = onednn.POST_OPS[post_op] or (lambda t: t)
        reference = activation(F.linear(x.float(), layer.weight.float(), layer.bias.float()))
    assert out.shape == (2, 70, 48) and out.dtype == torch.bfloat16
    assert (out.float() - reference).abs().max() <= 0.02 * reference.abs().max()


@needs_onednn
def test_the_weight_is_packed_once_and_again_when_it_or_the_bias_changes(monkeypatch):
    layer, x = _layer()
    packs = []
    pack = onednn.pack
    monkeypatch.setattr(onednn, "pack", lambda weight, rows: packs.append(rows) or pack(weight, rows))
    with torch.inference_mode():
        first = onednn.linear(layer, x)
        assert torch.equal(onednn.linear(layer, x), first) and packs == [140]
        with torch.no_grad():
            layer.weight.mul_(2)  # a new version of the weight: packed again
        doubled = onednn.linear(layer, x)
        assert len(packs) == 2
        assert (doubled.float() - (2 * first.float() - layer.bias.float())).abs().max() < 0.1
        layer.bias = torch.nn.Parameter(torch.zeros(48, dtype=torch.bfloat16))  # a new bias tensor
        assert (onednn.linear(layer, x).float() - (doubled.float() - 0)).abs().max() > 0.01
        assert torch.allclose(onednn.linear(layer, x).float(), F.linear(x, layer.weight, layer.bias).float(), atol=0.1)


def test_with_gradients_on_the_product_is_f_linear_and_differentiable():
    layer, x = _layer()
    out = onednn.linear(layer, x.requires_grad_(), "relu")
    out.float().sum().backward()
    assert torch.equal(out, F.relu(layer(x))) and layer.weight.grad is not None


def test_without_onednn_the_product_is_f_linear(monkeypatch):
    layer, x = _layer()
    monkeypatch.setattr(onednn, "available", lambda: False)
    with torch.inference_mode():
        assert torch.equal(onednn.linear(layer, x, "relu"), F.relu(layer(x)))
        assert torch.equal(onednn.Product(layer.weight, layer.bias)(x), layer(x))
    float_layer = torch.nn.Linear(32, 48)
    assert torch.equal(onednn.linear(float_layer, x.float()), float_layer(x.float()))  # float32: never packed


@needs_onednn
def test_a_flop_counter_sees_the_product():
    """The benchmark counts a frame's FLOPs with FlopCounterMode, which cannot see oneDNN's private operators."""
    from torch.utils.flop_counter import FlopCounterMode

    layer, x = _layer()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        onednn.linear(layer, x, "relu")
    assert counter.get_total_flops() == 2 * 140 * 32 * 48
