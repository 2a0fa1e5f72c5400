"""CaiT class attention and the SMART semantic-attention block (SMART eq. 1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medmim.errors import ConfigError
from medmim.layers.class_attention import ClassAttention, ClassAttentionBlock, SemanticAttention


def reference_class_attention(
    attn: ClassAttention, z: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop-over-heads reference: softmax(q_cls k^T / sqrt(d)) v, written from the
    CaiT equations.
    """
    b, t, c = z.shape
    h = attn.num_heads
    d = c // h
    q = F.linear(z[:, :1], attn.q.weight, attn.q.bias)
    k = F.linear(z, attn.k.weight, attn.k.bias)
    v = F.linear(z, attn.v.weight, attn.v.bias)
    outs, probs = [], []
    for i in range(h):
        sl = slice(i * d, (i + 1) * d)
        p = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / d**0.5, dim=-1)  # (B, 1, T)
        probs.append(p)
        outs.append(p @ v[..., sl])
    out = F.linear(torch.cat(outs, dim=-1), attn.proj.weight, attn.proj.bias)
    return out, torch.stack(probs, dim=1)  # (B, 1, C), (B, h, 1, T)


def test_class_attention_matches_reference_in_both_paths() -> None:
    attn = ClassAttention(24, 4).eval()
    z = torch.randn(3, 11, 24)
    ref_out, ref_probs = reference_class_attention(attn, z)
    fused, none = attn(z)
    explicit, probs = attn(z, return_attn=True)
    assert none is None
    assert fused.shape == (3, 1, 24) and probs.shape == (3, 4, 1, 11)
    torch.testing.assert_close(fused, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(explicit, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, ref_probs, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 4, 1))


def test_block_only_updates_cls_with_layerscale() -> None:
    block = ClassAttentionBlock(16, 2, layer_scale_init=1e-4).eval()
    cls, tokens = torch.randn(2, 1, 16), torch.randn(2, 5, 16)
    tokens_before = tokens.clone()
    new_cls, probs = block(cls, tokens)
    assert probs is None and new_cls.shape == (2, 1, 16)
    assert torch.equal(tokens, tokens_before)
    assert torch.equal(block.gamma1, torch.full((16,), 1e-4))
    # LayerScale 1e-4: the residual branches barely move the [CLS] at init
    assert 0 < (new_cls - cls).abs().max() < 1e-2


def test_semantic_attention_satt_is_eq1_without_cls_slot() -> None:
    sa = SemanticAttention(dim=32, num_heads=4, depth=2).eval()
    tokens = torch.randn(2, 9, 32)
    cls, satt = sa(tokens)
    assert cls.shape == (2, 32) and satt.shape == (2, 9) and satt.dtype == torch.float32
    # recompute the last block's probabilities from its input [CLS]
    c = sa.cls_token.expand(2, -1, -1)
    c, _ = sa.blocks[0](c, tokens)
    z = sa.blocks[1].norm1(torch.cat([c, tokens], dim=1))
    _, probs = reference_class_attention(sa.blocks[1].attn, z)
    torch.testing.assert_close(satt, probs[:, :, 0, 1:].mean(1), atol=1e-6, rtol=1e-5)
    assert (satt >= 0).all() and (satt.sum(1) < 1).all()
    self_slot = probs[:, :, 0, 0].mean(1)
    torch.testing.assert_close(satt.sum(1) + self_slot, torch.ones(2), atol=1e-6, rtol=0)


def test_semantic_attention_is_permutation_equivariant() -> None:
    sa = SemanticAttention(dim=16, num_heads=2).eval()
    tokens = torch.randn(1, 7, 16)
    perm = torch.randperm(7)
    cls, satt = sa(tokens)
    cls_p, satt_p = sa(tokens[:, perm])
    torch.testing.assert_close(cls_p, cls, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(satt_p, satt[:, perm], atol=1e-7, rtol=1e-5)


def test_gradients_reach_cls_token_and_every_block() -> None:
    sa = SemanticAttention(dim=16, num_heads=2, depth=2)
    tokens = torch.randn(2, 6, 16, requires_grad=True)
    cls, satt = sa(tokens)
    (cls.square().sum() + satt[:, 0].sum()).backward()
    assert sa.cls_token.grad is not None and sa.cls_token.grad.abs().sum() > 0
    for name, p in sa.named_parameters():
        assert p.grad is not None, name
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="dim=30 is not divisible by num_heads=4"):
        ClassAttention(30, 4)
    with pytest.raises(ConfigError, match="cls_init='normal'"):
        SemanticAttention(16, 2, cls_init="normal")


def test_bf16_autocast_keeps_float32_attention() -> None:
    sa = SemanticAttention(dim=16, num_heads=2).eval()
    tokens = torch.randn(2, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cls, satt = sa(tokens)
    assert satt.dtype == torch.float32 and torch.isfinite(cls).all()
    torch.testing.assert_close(satt, sa(tokens)[1], atol=2e-2, rtol=0)
