"""EVA-02 transformer block (Fang et al. 2023) as used by PUMIT's universal ViT.

Pre-norm block `x += Attn(LN(x)); x += SwiGLU(LN(x))` with

- attention: separate bias-free q/k/v projections plus learnable q and v biases (no k bias),
  RoPE on the queries and keys of the patch tokens (the [CLS] prefix is not rotated), fused
  `scaled_dot_product_attention`, an optional sub-LayerNorm before the output projection
  (EVA-02's `inner_attn_ln`; PUMIT's code leaves it out: `attn_sub_ln=False`);
- SwiGLU FFN: `w3(LN(SiLU(w1 x) * w2 x))`, hidden width int(dim * 8/3) (EVA-02's sub-LN FFN).

Example:
    >>> from medmim.layers.rope import Rope3D
    >>> block = EVABlock(dim=24, num_heads=2)
    >>> rope = Rope3D(head_dim=12)((1, 2, 2))
    >>> block(torch.randn(3, 1 + 4, 24), rope).shape
    torch.Size([3, 5, 24])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medmim.layers.rope import apply_rope

Rope = tuple[Tensor, Tensor]


class SwiGLU(nn.Module):
    """SwiGLU feed-forward with EVA-02's sub-LayerNorm: `w3(LN(SiLU(w1 x) * w2 x))`.

    Args:
        dim: input/output width.
        hidden: hidden width (EVA-02/PUMIT: int(dim * 8 / 3)).
        sub_ln: LayerNorm on the hidden units (EVA-02 `ffn_ln`).
        eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, hidden: int, sub_ln: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(dim, hidden)
        self.ffn_ln = nn.LayerNorm(hidden, eps=eps) if sub_ln else nn.Identity()
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(..., dim) -> (..., dim)."""
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


class EVAAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v, q/v biases and RoPE on the patch tokens.

    Args:
        dim: token width.
        num_heads: heads; dim must be divisible by it.
        qkv_bias: learnable q and v biases (k has none, as EVA-02).
        sub_ln: LayerNorm before the output projection (EVA-02 `inner_attn_ln`).
        eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        sub_ln: bool = True,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"EVAAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.inner_attn_ln = nn.LayerNorm(dim, eps=eps) if sub_ln else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _qk(self, x: Tensor, rope: Rope | None, prefix: int) -> tuple[Tensor, Tensor]:
        """Rotated (B, heads, L, head_dim) queries and keys."""
        q = self._heads(F.linear(x, self.q_proj.weight, self.q_bias))
        k = self._heads(self.k_proj(x))
        if rope is not None:
            cos, sin = rope
            q = torch.cat([q[:, :, :prefix], apply_rope(q[:, :, prefix:], cos, sin)], dim=2)
            k = torch.cat([k[:, :, :prefix], apply_rope(k[:, :, prefix:], cos, sin)], dim=2)
        return q, k

    def forward(self, x: Tensor, rope: Rope | None = None, prefix: int = 1) -> Tensor:
        """Attend over all tokens.

        Args:
            x: (B, L, C) with `prefix` unrotated tokens ([CLS]) first.
            rope: cos, sin (L - prefix, head_dim) of the patch tokens, or None.
            prefix: tokens before the patch tokens.

        Returns:
            (B, L, C).
        """
        q, k = self._qk(x, rope, prefix)
        v = self._heads(F.linear(x, self.v_proj.weight, self.v_bias))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return self.proj(self.inner_attn_ln(out))

    @torch.no_grad()
    def cls_attention(self, x: Tensor, rope: Rope | None = None, prefix: int = 1) -> Tensor:
        """[CLS] -> patch attention weights averaged over heads (SMART eq. 1 style), no gradient.

        Args:
            x: (B, L, C), the same input as `forward`; token 0 is the [CLS].
            rope: cos, sin (L - prefix, head_dim) of the patch tokens, or None.
            prefix: tokens before the patch tokens; their weights are left out.

        Returns:
            (B, L - prefix) float32; each row sums to <= 1 (the rest goes to the prefix).
        """
        q, k = self._qk(x, rope, prefix)
        logits = (q[:, :, :1].float() @ k.float().transpose(-2, -1)) * self.head_dim**-0.5
        return logits.softmax(dim=-1)[:, :, 0, prefix:].mean(dim=1)


class EVABlock(nn.Module):
    """Pre-norm EVA-02 block: `x + Attn(LN(x))`, then `x + SwiGLU(LN(x))` (no LayerScale).

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: SwiGLU hidden width / dim (8/3).
        qkv_bias: q and v biases.
        attn_sub_ln: EVA-02's LayerNorm inside the attention (PUMIT's code: off).
        eps: LayerNorm epsilon (EVA-02 1e-6; PUMIT's code 1e-5).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 8 / 3,
        qkv_bias: bool = True,
        attn_sub_ln: bool = True,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EVAAttention(dim, num_heads, qkv_bias, attn_sub_ln, eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = SwiGLU(dim, int(dim * mlp_ratio), sub_ln=True, eps=eps)

    def forward(self, x: Tensor, rope: Rope | None = None, prefix: int = 1) -> Tensor:
        """(B, L, C) -> (B, L, C); see `EVAAttention.forward` for `rope` and `prefix`."""
        x = x + self.attn(self.norm1(x), rope, prefix)
        return x + self.mlp(self.norm2(x))

    def cls_attention(self, x: Tensor, rope: Rope | None = None, prefix: int = 1) -> Tensor:
        """This block's [CLS] -> patch attention (B, L - prefix) for the block input `x`."""
        return self.attn.cls_attention(self.norm1(x), rope, prefix)
