"""PUMIT's universal visual tokenizer with soft tokens (Luo et al. 2024, "Universal Visual
Tokenizer", "Soft Token Representation", eq. 1).

The paper recipe is the public code's `SimpleVQTokenizer`: a plain conv encoder/decoder built from
SAC layers (no residual blocks, no attention), total stride 16 = the ViT patch, so tokenizer
tokens and ViT patches coincide at every degree of anisotropy.

Encoder: SAC conv k=s=4 -> LN -> GELU, then per extra level SAC conv k=s=2 -> LN -> GELU, then two
SAC 3x3x3 convs -> GroupNorm(8) -> LeakyReLU(0.01). Quantizer: logits `l_i = W z_i`, token
distribution `p_i = softmax(l_i)` (no temperature), soft token embedding
`z_q,i = E[e_K] = sum_k p_ik e_k` (eq. 1; codebook 1024 x 512 at paper size). Decoder: two SAC
3x3x3 conv blocks, per level a SAC transposed conv (x2) + SAC 3x3x3 conv + GN + LReLU, and a final
SAC transposed conv back to the image (stride = the stem's). Fully differentiable; no
straight-through estimator. The code's decoder builds its second conv with the codebook width as
input; here it takes the first conv's output width (identical at paper size).

Tokenizers are not backbones (no masking, no [CLS]); they live in their own registry,
`TOKENIZERS` ("pumit_tokenizer" paper size, "pumit_tokenizer_demo" CPU size, "soft_vq_tokenizer"
the class). Inputs are in [-1, 1]: use `to_tokenizer_range` on [0, 1] data.

Example:
    >>> tok = SoftVQTokenizer(channels=(16, 32), codebook_size=64, embed_dim=16)
    >>> out = tok(torch.randn(2, 1, 8, 32, 32), spacing=(2.0, 1.0, 1.0))
    >>> out.recon.shape, out.logits.shape
    (torch.Size([2, 1, 8, 32, 32]), torch.Size([2, 2, 4, 4, 64]))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medmim.errors import ConfigError
from medmim.layers.sac import (
    MAX_DA,
    Anisotropy,
    SACConv3d,
    SACConvTranspose3d,
    SACSequential,
    infer_anisotropy,
)
from medmim.models._backbone import jsonable
from medmim.registry import Registry, check_kwargs

TOKENIZERS: Registry[Any] = Registry("tokenizer", "medmim.models")

Spacing = Tensor | Sequence[float] | None


def to_tokenizer_range(x: Tensor) -> Tensor:
    """Map [0, 1] intensities to the tokenizer's [-1, 1] (PUMIT: `2x - 1`)."""
    return 2.0 * x - 1.0


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, ...) map (PUMIT's `LayerNormNd`)."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """Normalise a (B, C, ...) map over C; returns the same shape."""
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


@dataclass
class TokenizerOutput:
    """What `SoftVQTokenizer.forward` returns.

    Attributes:
        recon: (B, C, D, H, W) reconstruction in [-1, 1] space.
        logits: (B, d, h, w, K) token logits; `softmax(logits)` are the soft tokens.
    """

    recon: Tensor
    logits: Tensor


def _conv_block(cin: int, cout: int, groups: int) -> list[nn.Module]:
    return [SACConv3d(cin, cout, 3, 1, 1), nn.GroupNorm(groups, cout), nn.LeakyReLU(0.01)]


@TOKENIZERS.register("soft_vq_tokenizer")
class SoftVQTokenizer(nn.Module):
    """SAC conv tokenizer with soft tokens.

    Args:
        in_channels: image channels.
        stem_stride: kernel = stride of the first conv (4).
        channels: widths per level (paper 128, 256, 512); total stride stem * 2^(levels - 1).
        codebook_size: K (paper 1024).
        embed_dim: codebook vector width (paper 512).
        num_groups: GroupNorm groups (8).
        max_da: upper clip of the degree of anisotropy.
    """

    def __init__(
        self,
        in_channels: int = 1,
        stem_stride: int = 4,
        channels: Sequence[int] = (128, 256, 512),
        codebook_size: int = 1024,
        embed_dim: int = 512,
        num_groups: int = 8,
        max_da: int = MAX_DA,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "name": "soft_vq_tokenizer",
            **jsonable({k: v for k, v in locals().items() if k not in ("self", "__class__")}),
        }
        c = list(channels)
        self.in_channels, self.codebook_size, self.max_da = in_channels, codebook_size, max_da
        self.stride = stem_stride * 2 ** (len(c) - 1)
        enc: list[nn.Module] = [
            SACConv3d(in_channels, c[0], stem_stride, stem_stride),
            ChannelLayerNorm(c[0]),
            nn.GELU(),
        ]
        for cin, cout in zip(c[:-1], c[1:]):
            enc += [SACConv3d(cin, cout, 2, 2), ChannelLayerNorm(cout), nn.GELU()]
        enc += _conv_block(c[-1], c[-1], num_groups) + _conv_block(c[-1], c[-1], num_groups)
        self.encoder = SACSequential(*enc)
        self.to_logits = nn.Linear(c[-1], codebook_size)
        self.codebook = nn.Embedding(codebook_size, embed_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        dec = _conv_block(embed_dim, c[-1], num_groups) + _conv_block(c[-1], c[-1], num_groups)
        for cin, cout in zip(c[::-1][:-1], c[::-1][1:]):
            dec += [SACConvTranspose3d(cin, cout, 2), *_conv_block(cout, cout, num_groups)]
        dec.append(SACConvTranspose3d(c[0], in_channels, stem_stride))
        self.decoder = SACSequential(*dec)

    def anisotropy(self, input_shape: Sequence[int], spacing: Spacing = None) -> Anisotropy:
        """The input's SAC state (DA from `spacing`; None = isotropic, or 2D for one slice)."""
        return infer_anisotropy(tuple(input_shape)[-3:], spacing, self.max_da)

    def token_grid(
        self, input_shape: Sequence[int], spacing: Spacing = None
    ) -> tuple[int, int, int]:
        """Token grid (d, h, w) of an input (..., D, H, W); ValueError if it does not divide."""
        shape = tuple(int(s) for s in tuple(input_shape)[-3:])
        patch = (
            max(self.stride >> self.anisotropy(shape, spacing).da, 1),
            self.stride,
            self.stride,
        )
        if any(s % p or s == 0 for s, p in zip(shape, patch)):
            raise ValueError(
                f"tokenizer: input size {shape} is not a multiple of its patch {patch} at this DA"
            )
        return tuple(s // p for s, p in zip(shape, patch))  # type: ignore[return-value]

    def encode(self, x: Tensor, spacing: Spacing = None) -> tuple[Tensor, Anisotropy]:
        """Token logits (B, d, h, w, K) of an image in [-1, 1], and the encoder's output state."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"tokenizer: expected (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}"
            )
        self.token_grid(x.shape, spacing)
        z, aniso = self.encoder(x, self.anisotropy(x.shape, spacing))
        return self.to_logits(z.movedim(1, -1)), aniso

    def embed(self, probs: Tensor) -> Tensor:
        """Soft token embeddings (eq. 1): (B, d, h, w, K) probabilities -> (B, E, d, h, w)."""
        return (probs.to(self.codebook.weight.dtype) @ self.codebook.weight).movedim(-1, 1)

    def decode(self, probs: Tensor, aniso: Anisotropy) -> Tensor:
        """Reconstruct (B, C, D, H, W) from token distributions, given the encoder's
        output state.
        """
        recon, _ = self.decoder(self.embed(probs), aniso)
        return recon

    def forward(self, x: Tensor, spacing: Spacing = None) -> TokenizerOutput:
        """Encode, take the soft tokens, decode. x: (B, C, D, H, W) in [-1, 1]."""
        logits, aniso = self.encode(x, spacing)
        return TokenizerOutput(recon=self.decode(logits.softmax(dim=-1), aniso), logits=logits)

    @torch.no_grad()
    def token_probs(self, x: Tensor, spacing: Spacing = None) -> Tensor:
        """MIM targets: soft token distributions (B, N, K), N = d*h*w row-major, no gradient."""
        logits, _ = self.encode(x, spacing)
        return logits.float().softmax(dim=-1).flatten(1, 3)


#: Sizes: the paper's (codebook 1024 x 512, widths 128/256/512) and a CPU demo size.
TOKENIZER_PRESETS: dict[str, dict[str, Any]] = {
    "pumit_tokenizer": {"channels": (128, 256, 512), "codebook_size": 1024, "embed_dim": 512},
    "pumit_tokenizer_demo": {"channels": (16, 32, 64), "codebook_size": 256, "embed_dim": 64},
}


def _register(name: str, preset: dict[str, Any]) -> None:
    def build(**overrides: Any) -> SoftVQTokenizer:
        check_kwargs(SoftVQTokenizer, overrides, f"tokenizer '{name}'")
        return SoftVQTokenizer(**{**preset, **overrides})

    build.__name__ = name
    build.__doc__ = f"SoftVQTokenizer preset '{name}': {preset}; keyword overrides allowed."
    TOKENIZERS.register(name)(build)


for _name, _preset in TOKENIZER_PRESETS.items():
    _register(_name, _preset)


def load_tokenizer(path: str | Path) -> SoftVQTokenizer:
    """A trained tokenizer from a `pumit_tokenizer` run, frozen and in eval mode.

    Args:
        path: a training checkpoint (`runs/<name>/checkpoints/last.ckpt`: keys "encoder" and
            "encoder_config"), a run directory (its `checkpoints/last.ckpt`), or an export
            (`encoder.safetensors` next to `encoder.json`, or their directory).

    Raises:
        ConfigError: for a missing path, an unreadable file or a checkpoint that is not a tokenizer.
    """
    p = Path(path)
    if str(path) == "" or not p.exists():
        raise ConfigError(
            f"tokenizer '{path}' does not exist: train one first (`medmim pretrain --config "
            "pumit_tokenizer_demo`) and pass its runs/<name>/checkpoints/last.ckpt "
            "or export directory"
        )
    if p.is_dir():
        p = (
            p / "encoder.safetensors"
            if (p / "encoder.json").is_file()
            else p / "checkpoints" / "last.ckpt"
        )
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        spec, state = (
            json.loads((p.parent / "encoder.json").read_text(encoding="utf-8"))["backbone"],
            load_file(str(p)),
        )
    else:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or "encoder" not in ckpt or "encoder_config" not in ckpt:
            raise ConfigError(
                f"{p}: not a medmim checkpoint (needs 'encoder' and 'encoder_config')"
            )
        spec, state = ckpt["encoder_config"], ckpt["encoder"]
    if spec.get("name") not in TOKENIZERS:
        raise ConfigError(
            f"{p}: holds a '{spec.get('name')}', not a tokenizer "
            f"({', '.join(TOKENIZERS.names())}); pass the checkpoint of a pumit_tokenizer run"
        )
    tokenizer = TOKENIZERS.build(spec)
    tokenizer.load_state_dict(state)
    return tokenizer.requires_grad_(False).eval()
