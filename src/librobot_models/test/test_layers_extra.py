"""Shared layers against their reference formulas: attention variants, RoPE, ALiBi, norms, gated
activations, FiLM, cross-attention fusion, state and history encoders."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from librobot_models.layers import (
    MLP,
    Attention,
    AttentionConfig,
    CrossAttentionFusion,
    FiLM,
    GeGLU,
    KVCache,
    LSTMHistoryEncoder,
    MLPStateEncoder,
    SwiGLU,
    TransformerDecoder,
    TransformerEncoder,
    TransformerHistoryEncoder,
    TransformerStateEncoder,
    activation,
    alibi_bias,
    alibi_slopes,
    apply_rotary,
    attention_mask,
    norm,
)


def reference_attention(module: Attention, x: torch.Tensor, allowed: torch.Tensor, bias=None, rope=False):
    """Softmax attention written out: scores = q k^T / sqrt(d) + bias, masked where not allowed."""
    B, S, D = x.shape
    h = module.n_heads
    q = module.q_proj(x).view(B, S, h, D // h).transpose(1, 2)  # (B, h, S, d)
    k = module.k_proj(x).view(B, S, h, D // h).transpose(1, 2)
    v = module.v_proj(x).view(B, S, h, D // h).transpose(1, 2)
    if rope:
        q, k = apply_rotary(q, torch.arange(S)), apply_rotary(k, torch.arange(S))
    scores = q @ k.transpose(-1, -2) / math.sqrt(D // h)  # (B, h, S, S)
    if bias is not None:
        scores = scores + bias
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = scores.softmax(-1) @ v  # (B, h, S, d)
    return module.out_proj(out.transpose(1, 2).reshape(B, S, D))


def hand_mask(S, causal=False, window=None, block=None):
    allowed = torch.ones(S, S, dtype=torch.bool)
    for i in range(S):
        for j in range(S):
            if causal and j > i:
                allowed[i, j] = False
            if window is not None and abs(i - j) >= window:
                allowed[i, j] = False
            if block is not None and i // block != j // block:
                allowed[i, j] = False
    return allowed


# -- positional ------------------------------------------------------------------------------------
def test_rope_dot_product_depends_only_on_the_position_difference():
    torch.manual_seed(0)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):
        rq = apply_rotary(q[None], torch.tensor([m]))[0]
        rk = apply_rotary(k[None], torch.tensor([n]))[0]
        return rq @ rk

    for m, n in [(3, 1), (7, 2), (0, 9)]:
        for shift in (1, 5, 40):
            torch.testing.assert_close(score(m, n), score(m + shift, n + shift), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(score(3, 1), score(4, 1))  # but it does depend on the difference
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(apply_rotary(x, torch.zeros(5)), x)  # position 0: no rotation
    torch.testing.assert_close(apply_rotary(x, torch.arange(5)).norm(dim=-1), x.norm(dim=-1))  # a rotation


def test_alibi_slopes_and_bias_match_the_paper():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0**-i for i in range(1, 9)]))
    six = [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]  # 4 heads' slopes, then every other of 8
    torch.testing.assert_close(alibi_slopes(6), torch.tensor(six))
    bias = alibi_bias(alibi_slopes(8), torch.arange(4), torch.arange(4))  # (8, 4, 4)
    assert bias.shape == (8, 4, 4)
    assert bias[0, 3, 0] == -0.5 * 3 and bias[7, 1, 3] == -(2.0**-8) * 2
    torch.testing.assert_close(bias.diagonal(dim1=1, dim2=2), torch.zeros(8, 4))


# -- attention variants ----------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_sliding_window_equals_full_attention_with_a_hand_written_mask(causal):
    torch.manual_seed(0)
    module = Attention(16, 2, config=AttentionConfig(window=3)).eval()
    x = torch.randn(2, 9, 16)
    expected = reference_attention(module, x, hand_mask(9, causal=causal, window=3))
    torch.testing.assert_close(module(x, x, x, is_causal=causal), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention_mask(9, 9, causal, window=3), hand_mask(9, causal=causal, window=3))


@pytest.mark.parametrize("seq_len, causal, window", [(12, False, None), (10, True, None), (11, False, 2)])
def test_blockwise_equals_masked_full_attention(seq_len, causal, window):
    torch.manual_seed(0)
    module = Attention(16, 4, config=AttentionConfig(block_size=4, window=window)).eval()
    x = torch.randn(2, seq_len, 16)
    expected = reference_attention(module, x, hand_mask(seq_len, causal, window, block=4))
    torch.testing.assert_close(module(x, x, x, is_causal=causal), expected, atol=1e-5, rtol=1e-5)


def test_blockwise_respects_key_padding():
    torch.manual_seed(0)
    module = Attention(16, 4, config=AttentionConfig(block_size=3)).eval()
    x = torch.randn(1, 7, 16)
    pad = torch.tensor([[False, True, False, False, False, True, False]])
    allowed = hand_mask(7, block=3) & ~pad[0][None, :]
    torch.testing.assert_close(module(x, x, x, key_padding_mask=pad), reference_attention(module, x, allowed))
    with pytest.raises(ValueError, match="needs self-attention"):
        module(x, torch.randn(1, 5, 16), torch.randn(1, 5, 16))


def test_alibi_and_rope_attention_match_the_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 16)
    alibi = Attention(16, 4, config=AttentionConfig(position="alibi")).eval()
    bias = alibi_bias(alibi_slopes(4), torch.arange(6), torch.arange(6))
    expected = reference_attention(alibi, x, hand_mask(6, causal=True), bias=bias)
    torch.testing.assert_close(alibi(x, x, x, is_causal=True), expected, atol=1e-5, rtol=1e-5)
    rope = Attention(16, 4, config=AttentionConfig(position="rope")).eval()
    expected = reference_attention(rope, x, hand_mask(6), rope=True)
    torch.testing.assert_close(rope(x, x, x), expected, atol=1e-5, rtol=1e-5)


def test_flash_backend_on_cpu_warns_and_gives_the_standard_result():
    torch.manual_seed(0)
    flash = Attention(16, 4, config=AttentionConfig(backend="flash")).eval()
    standard = Attention(16, 4).eval()
    standard.load_state_dict(flash.state_dict())
    x = torch.randn(2, 5, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = flash(x, x, x, is_causal=True)
    assert any("flash" in str(w.message) and "cpu" in str(w.message) for w in caught)
    torch.testing.assert_close(out, standard(x, x, x, is_causal=True))


def test_explicit_attention_mask_per_call_and_per_sample():
    torch.manual_seed(0)
    module = Attention(16, 2).eval()
    x = torch.randn(2, 7, 16)
    allowed = torch.rand(7, 7) > 0.4
    allowed |= torch.eye(7, dtype=torch.bool)  # every query keeps a key
    expected = reference_attention(module, x, allowed & hand_mask(7, causal=True))
    out = module(x, x, x, attn_mask=allowed, is_causal=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    per_sample = torch.stack([allowed, hand_mask(7, window=2)])  # (B, S, S)
    expected = reference_attention(module, x, per_sample[:, None])
    torch.testing.assert_close(module(x, x, x, attn_mask=per_sample), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"attn_mask is torch.float32 \(7, 7\): expected bool"):
        module(x, x, x, attn_mask=allowed.float())
    with pytest.raises(ValueError, match="cannot be combined with block-wise attention"):
        Attention(16, 2, config=AttentionConfig(block_size=4))(x, x, x, attn_mask=allowed)


def test_fully_masked_queries_stay_finite_under_causal_padding():
    """Left-padded history + causal mask: the first (padded) step has no visible key."""
    torch.manual_seed(0)
    encoder = TransformerEncoder(2, 16, 4, 32, dropout=0.0, pre_norm=True).eval()
    pad = torch.tensor([[True, True, False, False, False]])
    out = encoder(torch.randn(1, 5, 16), key_padding_mask=pad, is_causal=True)
    assert torch.isfinite(out).all()


def test_attention_options_flow_into_the_transformer_stacks():
    config = AttentionConfig(position="rope", window=4)
    encoder = TransformerEncoder(2, 32, 4, 64, norm="rms", attention=config)
    decoder = TransformerDecoder(1, 32, 4, 64, pre_norm=True, norm="group", attention=config)
    memory = encoder(torch.randn(2, 9, 32), is_causal=True)
    out = decoder(torch.randn(2, 5, 32), memory, is_causal=True)
    assert memory.shape == (2, 9, 32) and out.shape == (2, 5, 32)
    assert decoder.layers[0].self_attn.config == config
    assert decoder.layers[0].cross_attn.config == AttentionConfig()  # no positions shared with the memory
    expected = r"AttentionConfig.position = 'xpos' .* one of \['none', 'rope', 'alibi'\]"
    with pytest.raises(ValueError, match=expected):
        AttentionConfig(position="xpos")
    with pytest.raises(ValueError, match="window = 0"):
        AttentionConfig(window=0)


# -- norms and activations -------------------------------------------------------------------------
def test_rms_layer_and_group_norm_formulas():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8)
    rms = norm("rms", 8)
    with torch.no_grad():
        rms.weight.copy_(torch.linspace(0.5, 2.0, 8))
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * rms.weight
    torch.testing.assert_close(rms(x), expected)

    def standardise(v):  # over the last axis, eps 1e-5 (torch's LayerNorm / GroupNorm default)
        return (v - v.mean(-1, keepdim=True)) / torch.sqrt(v.var(-1, unbiased=False, keepdim=True) + 1e-5)

    torch.testing.assert_close(norm("layer", 8)(x), standardise(x))
    group = norm("group", 8, groups=2)
    torch.testing.assert_close(group(x), standardise(x.view(3, 5, 2, 4)).view(3, 5, 8))
    with pytest.raises(ValueError, match=r"unknown norm 'batch'; expected one of \['layer', 'rms', "):
        norm("batch", 8)
    with pytest.raises(ValueError, match="dim 6 is not divisible by groups 4"):
        norm("group", 6, groups=4)


def test_gated_activations_follow_their_formulas():
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    swiglu = activation("swiglu", 6, 10)
    assert isinstance(swiglu, SwiGLU)
    W, b = swiglu.proj.weight, swiglu.proj.bias  # (20, 6), (20,): gate rows first, then value rows
    expected = F.silu(x @ W[:10].T + b[:10]) * (x @ W[10:].T + b[10:])
    torch.testing.assert_close(swiglu(x), expected)
    geglu = GeGLU(6, 10)
    W, b = geglu.proj.weight, geglu.proj.bias
    torch.testing.assert_close(geglu(x), F.gelu(x @ W[:10].T + b[:10]) * (x @ W[10:].T + b[10:]))
    assert isinstance(activation("gelu"), torch.nn.GELU) and isinstance(activation("relu"), torch.nn.ReLU)
    with pytest.raises(ValueError, match="give in_dim and out_dim"):
        activation("swiglu")
    mlp = MLP(6, [12], 3, act="swiglu")
    assert isinstance(mlp[0], SwiGLU) and mlp(x).shape == (4, 3)


# -- fusion ----------------------------------------------------------------------------------------
def test_film_is_gamma_times_x_plus_beta():
    torch.manual_seed(0)
    film = FiLM(cond_dim=5, dim=4)
    x, cond = torch.randn(2, 7, 4), torch.randn(2, 5)
    gamma, beta = film.proj(cond).chunk(2, dim=-1)  # (2, 4) each
    torch.testing.assert_close(film(x, cond), gamma[:, None] * x + beta[:, None])
    fresh = FiLM(5, 4)
    with torch.no_grad():
        fresh.proj.weight.zero_()
    torch.testing.assert_close(fresh(x, cond), x)  # starts at gamma = 1, beta = 0
    with pytest.raises(ValueError, match="4 channels last"):
        film(torch.randn(2, 4, 7), cond)


def test_cross_attention_fusion_ignores_padded_context():
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(16, 4, context_dim=8).eval()
    x, context = torch.randn(2, 3, 16), torch.randn(2, 5, 8)
    pad = torch.tensor([[False, False, True, True, True]] * 2)
    out = fusion(x, context, pad)
    changed = context.clone()
    changed[:, 2:] = 50.0
    assert out.shape == (2, 3, 16)
    torch.testing.assert_close(out, fusion(x, changed, pad))
    torch.testing.assert_close(out, fusion(x, context[:, :2]))


# -- encoders --------------------------------------------------------------------------------------
def test_state_encoders_shapes():
    state = torch.randn(3, 6)
    assert MLPStateEncoder(6, 32)(state).shape == (3, 32)
    per_joint = TransformerStateEncoder(6, 32, n_layers=1)
    assert per_joint(state).shape == (3, 6, 32)


@pytest.mark.parametrize(
    "encoder",
    [LSTMHistoryEncoder(5, 16, n_layers=2), TransformerHistoryEncoder(5, 16, n_layers=2, max_len=12)],
    ids=["lstm", "transformer"],
)
def test_history_encoders_are_causal(encoder):
    torch.manual_seed(0)
    encoder.eval()
    history = torch.randn(2, 8, 5)
    out = encoder(history)
    assert out.shape == (2, 8, 16)
    future_changed = history.clone()
    future_changed[:, 5:] = torch.randn(2, 3, 5)
    out2 = encoder(future_changed)
    torch.testing.assert_close(out[:, :5], out2[:, :5])  # steps 0..4 do not see steps 5..7
    assert not torch.allclose(out[:, 5:], out2[:, 5:])


def test_bidirectional_history_encoder_sees_the_future_and_checks_length():
    torch.manual_seed(0)
    encoder = TransformerHistoryEncoder(5, 16, n_layers=1, max_len=8, causal=False).eval()
    history = torch.randn(1, 6, 5)
    changed = history.clone()
    changed[:, -1] += 1.0
    assert not torch.allclose(encoder(history)[:, 0], encoder(changed)[:, 0])
    with pytest.raises(ValueError, match="history of 9 steps is longer than max_len 8"):
        encoder(torch.randn(1, 9, 5))


@pytest.mark.parametrize(
    "attention",
    [AttentionConfig(), AttentionConfig(position="rope"), AttentionConfig(position="alibi"), AttentionConfig(window=3)],
    ids=["standard", "rope", "alibi", "window"],
)
def test_incremental_decoding_with_a_kv_cache_equals_the_full_causal_pass(attention):
    torch.manual_seed(0)
    decoder = TransformerDecoder(2, 16, 4, 32, dropout=0.0, pre_norm=True, attention=attention).eval()
    x, memory = torch.randn(2, 7, 16), torch.randn(2, 5, 16)
    memory_pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    full = decoder(x, memory, memory_key_padding_mask=memory_pad, is_causal=True)  # (2, 7, 16)
    cache = decoder.new_cache()
    pieces = [x[:, :3], x[:, 3:4], x[:, 4:5], x[:, 5:]]  # a prompt, then one token at a time, then two
    steps = [decoder(p, memory, memory_key_padding_mask=memory_pad, is_causal=True, cache=cache) for p in pieces]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    self_cache, cross_cache = cache[0]
    assert self_cache.length == 7 and cross_cache.length == 5  # the memory's keys, computed once


def test_a_cache_is_refused_with_block_wise_attention():
    attn = Attention(16, 4, config=AttentionConfig(block_size=4))
    x = torch.randn(1, 4, 16)
    with pytest.raises(ValueError, match="cannot be combined with block-wise attention"):
        attn(x, x, x, cache=KVCache())
