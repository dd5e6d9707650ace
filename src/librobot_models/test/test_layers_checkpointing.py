"""Gradient checkpointing of the transformer stacks: the same outputs and gradients, recomputed."""

import torch

import librobot_models.layers.transformer as transformer
from librobot_models.layers import TransformerDecoder, TransformerEncoder


def _grads(stack, *inputs):
    torch.manual_seed(1)  # the same dropout masks
    stack.zero_grad()
    out = stack(*inputs)
    out.square().sum().backward()
    return out.detach(), [p.grad.clone() for p in stack.parameters()]


def test_checkpointed_stacks_give_the_same_outputs_and_gradients(monkeypatch):
    torch.manual_seed(0)
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, -1] = True
    for stack, inputs in ((TransformerEncoder(2, 16, 4, 32, dropout=0.1), (x, None, mask)),
                          (TransformerDecoder(2, 16, 4, 32, dropout=0.1), (x, memory))):
        plain_out, plain_grads = _grads(stack, *inputs)
        calls = []
        monkeypatch.setattr(transformer, "checkpoint", lambda *a, **kw: calls.append(1) or
                            torch.utils.checkpoint.checkpoint(*a, **kw))
        stack.gradient_checkpointing = True
        out, grads = _grads(stack, *inputs)
        assert len(calls) == 2 and torch.allclose(out, plain_out, atol=1e-6)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, plain_grads))
        stack.eval()
        with torch.no_grad():
            stack(*inputs)
        assert len(calls) == 2  # not in eval mode nor without autograd
        monkeypatch.undo()


def test_incremental_decoding_is_not_checkpointed(monkeypatch):
    decoder = TransformerDecoder(1, 16, 4, 32, dropout=0.0)
    decoder.gradient_checkpointing = True
    calls = []
    monkeypatch.setattr(transformer, "checkpoint", lambda *a, **kw: calls.append(1))
    cache = decoder.new_cache()
    out = decoder(torch.randn(1, 1, 16), torch.randn(1, 3, 16), cache=cache)
    assert out.shape == (1, 1, 16) and calls == []
