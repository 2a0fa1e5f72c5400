"""CaiT class attention with LayerScale, and the SMART semantic-attention (SA) block built from it.

Class attention (Touvron et al., "Going deeper with image transformers", ICCV 2021, sec. 3.2):
only the [CLS] token is a query; keys and values come from [CLS; tokens]; the tokens themselves
are not updated. SMART (Jiang et al. 2024, sec. 3.2) stacks two such blocks on the tokens of one
Swin stage and reads the semantic attention SATT off the last block (eq. 1).

Example:
    >>> sa = SemanticAttention(dim=96, num_heads=4)
    >>> cls, satt = sa(torch.randn(2, 27, 96))
    >>> cls.shape, satt.shape
    (torch.Size([2, 96]), torch.Size([2, 27]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import MLPBlock
from monai.networks.layers import DropPath
from torch import Tensor, nn

from medmim.errors import ConfigError


class ClassAttention(nn.Module):
    """Multi-head attention with the [CLS] token as the only query.

    Q = W_q z_[CLS] + b_q, K = W_k z + b_k, V = W_v z + b_v over z = [CLS; tokens] (SMART sec. 3.2).
    The output uses `F.scaled_dot_product_attention` unless the probabilities are requested,
    in which case an explicit (float32) softmax is used and returned.

    Args:
        dim: token width C.
        num_heads: heads h; `dim` must be divisible by it.
        qkv_bias: biases b_q, b_k, b_v.
        attn_drop: dropout on the attention probabilities (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ConfigError(
                f"ClassAttention: dim={dim} is not divisible by num_heads={num_heads}"
            )
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        return x.reshape(b, t, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, z: Tensor, return_attn: bool = False) -> tuple[Tensor, Tensor | None]:
        """Attend from the [CLS] token over all of `z`.

        Args:
            z: (B, 1+N, C) with the [CLS] token first.
            return_attn: also return the softmax probabilities.

        Returns:
            The updated [CLS] (B, 1, C) and, if asked, the probabilities (B, h, 1, 1+N) in float32,
            else None.
        """
        b, _, c = z.shape
        q, k, v = self._heads(self.q(z[:, :1])), self._heads(self.k(z)), self._heads(self.v(z))
        drop = self.attn_drop if self.training else 0.0
        probs = None
        if return_attn:
            probs = float32_softmax_scores(q, k, self.scale)
            out = F.dropout(probs, drop, self.training).to(v.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        out = out.transpose(1, 2).reshape(b, 1, c)
        return self.proj_drop(self.proj(out)), probs


class ClassAttentionBlock(nn.Module):
    """CaiT class-attention block with LayerScale (CaiT eq. for the class-attention stage).

    cls <- cls + gamma_1 * CA(LN([cls; tokens])); cls <- cls + gamma_2 * MLP(LN(cls)).
    The tokens pass through unchanged.

    Args:
        dim: token width C.
        num_heads: attention heads.
        mlp_ratio: hidden width of the MLP as a multiple of `dim`.
        qkv_bias: biases of the q/k/v projections.
        drop: dropout in the MLP and after the attention projection.
        attn_drop: dropout on the attention probabilities.
        drop_path: stochastic depth on both residual branches.
        layer_scale_init: initial value of gamma_1 and gamma_2 (CaiT/SMART: 1e-4).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init: float = 1e-4,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ClassAttention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), drop, act="GELU")
        self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self, cls: Tensor, tokens: Tensor, return_attn: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Update `cls` (B, 1, C) from `tokens` (B, N, C).

        Returns:
            The new [CLS] (B, 1, C) and the probabilities (B, h, 1, 1+N) when asked, else None.
        """
        out, probs = self.attn(self.norm1(torch.cat([cls, tokens], dim=1)), return_attn)
        cls = cls + self.drop_path(self.gamma1 * out)
        cls = cls + self.drop_path(self.gamma2 * self.mlp(self.norm2(cls)))
        return cls, probs


class SemanticAttention(nn.Module):
    """SMART's semantic-attention (SA) block: a learnable [CLS] and `depth` class-attention blocks.

    SATT = 1/h sum_h Softmax(Q_h^[CLS] K_h^T / sqrt(D/h)) (SMART eq. 1), taken from the last block,
    with the [CLS] self slot dropped: each row holds N values in [0, 1] that sum to 1 minus the
    [CLS]'s attention to itself, i.e. to at most 1 (as in the AttMask and SMART code; not
    renormalised).

    Args:
        dim: token width C of the stage the block reads.
        num_heads: attention heads (SMART: the heads of that Swin stage).
        depth: number of class-attention blocks (SMART: 2).
        mlp_ratio: MLP width multiple.
        qkv_bias: q/k/v biases.
        layer_scale_init: LayerScale init (1e-4).
        drop_path: stochastic depth of the blocks (the SMART code uses none).
        cls_init: "trunc_normal" (std 0.02, MONAI port of the code) or "zeros" (TransMorph code).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        depth: int = 2,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        layer_scale_init: float = 1e-4,
        drop_path: float = 0.0,
        cls_init: str = "trunc_normal",
    ) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(
            ClassAttentionBlock(
                dim,
                num_heads,
                mlp_ratio,
                qkv_bias,
                drop_path=drop_path,
                layer_scale_init=layer_scale_init,
            )
            for _ in range(depth)
        )
        self.apply(init_transformer_weights)
        init_token(self.cls_token, cls_init, "cls_init")

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Run the [CLS] over `tokens`.

        Args:
            tokens: (B, N, C) stage tokens (not normalised; each block normalises [CLS; tokens]).

        Returns:
            cls (B, C), not normalised, and SATT (B, N) in float32 (eq. 1, [CLS] slot dropped).
        """
        cls = self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        probs = None
        for i, block in enumerate(self.blocks):
            cls, probs = block(cls, tokens, return_attn=i == len(self.blocks) - 1)
        assert probs is not None
        return cls[:, 0], probs[:, :, 0, 1:].mean(dim=1)


def float32_softmax_scores(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """softmax(q k^T * scale) over the last axis, in float32 even under autocast.

    Args:
        q: (..., Tq, d) queries.
        k: (..., Tk, d) keys.
        scale: factor on the scores, usually d ** -0.5.

    Returns:
        (..., Tq, Tk) float32 probabilities.
    """
    with torch.autocast(q.device.type, enabled=False):
        return ((q.float() * scale) @ k.float().transpose(-2, -1)).softmax(dim=-1)


def init_transformer_weights(module: nn.Module) -> None:
    """ViT/CaiT init: truncated normal (std 0.02) Linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_token(param: Tensor, how: str, field: str = "token_init") -> None:
    """Initialise a learnable token in place: "trunc_normal" (std 0.02) or "zeros"."""
    if how == "trunc_normal":
        nn.init.trunc_normal_(param, std=0.02)
    elif how == "zeros":
        nn.init.zeros_(param)
    else:
        raise ConfigError(f"{field}='{how}' is not known; use 'trunc_normal' or 'zeros'")
