"""EVA-02 block: SwiGLU formula, attention vs a hand-written reference, RoPE only on patches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medmim.layers.eva import EVAAttention, EVABlock, SwiGLU
from medmim.layers.rope import Rope3D, apply_rope


def test_swiglu_formula_and_width() -> None:
    ffn = SwiGLU(24, int(24 * 8 / 3))
    assert ffn.w1.out_features == 64
    x = torch.randn(3, 24)
    ref = ffn.w3(
        F.layer_norm(F.silu(ffn.w1(x)) * ffn.w2(x), (64,), ffn.ffn_ln.weight, ffn.ffn_ln.bias, 1e-6)
    )
    torch.testing.assert_close(ffn(x), ref)


def test_attention_matches_reference_and_leaves_cls_unrotated() -> None:
    attn = EVAAttention(16, 2, sub_ln=False)
    torch.nn.init.normal_(attn.q_bias)
    torch.nn.init.normal_(attn.v_bias)
    x = torch.randn(2, 1 + 6, 16)
    cos, sin = Rope3D(8)((1, 2, 3))
    q = (x @ attn.q_proj.weight.T + attn.q_bias).view(2, 7, 2, 8).transpose(1, 2)
    k = (x @ attn.k_proj.weight.T).view(2, 7, 2, 8).transpose(1, 2)  # no k bias
    v = (x @ attn.v_proj.weight.T + attn.v_bias).view(2, 7, 2, 8).transpose(1, 2)
    q[:, :, 1:], k[:, :, 1:] = apply_rope(q[:, :, 1:], cos, sin), apply_rope(k[:, :, 1:], cos, sin)
    w = (q @ k.transpose(-1, -2) / 8**0.5).softmax(-1)
    ref = attn.proj((w @ v).transpose(1, 2).reshape(2, 7, 16))
    torch.testing.assert_close(attn(x, (cos, sin)), ref, atol=1e-5, rtol=1e-5)
    cls_ref = w[:, :, 0, 1:].mean(1)
    torch.testing.assert_close(attn.cls_attention(x, (cos, sin)), cls_ref, atol=1e-5, rtol=1e-5)
    assert attn.k_proj.bias is None and not hasattr(attn, "k_bias")


def test_block_is_pre_norm_residual_and_sub_ln_switch() -> None:
    block = EVABlock(16, 2, attn_sub_ln=True)
    x = torch.randn(2, 5, 16)
    rope = Rope3D(8)((1, 2, 2))
    h = x + block.attn(block.norm1(x), rope)
    torch.testing.assert_close(block(x, rope), h + block.mlp(block.norm2(h)))
    assert isinstance(block.attn.inner_attn_ln, torch.nn.LayerNorm)
    assert isinstance(EVABlock(16, 2, attn_sub_ln=False).attn.inner_attn_ln, torch.nn.Identity)
    attn = block.cls_attention(x, rope)
    assert attn.shape == (2, 4) and bool((attn.sum(-1) <= 1 + 1e-6).all())
