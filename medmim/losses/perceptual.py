"""Optional LPIPS-VGG16 perceptual loss of PUMIT's tokenizer (Zhang et al. 2018), slice-wise in 2D.

The volume is cut into depth slices (at most `max_slices` per sample, the same random slices for
x and x_hat; code: 24), gray slices are repeated to RGB, mapped from [-1, 1] to ImageNet
normalisation, and passed through VGG16's conv stack; at relu1_2, relu2_2, relu3_3, relu4_3 and
relu5_3 the channel-unit-normalised features are differenced, squared, weighted per channel
(LPIPS' linear heads; uniform without them), averaged over space and slices and summed over layers.

No weights can be downloaded by medmim: the user passes a file holding torchvision's VGG16
`features.*` tensors (torch `.pth` or `.safetensors`) and, optionally, LPIPS' linear heads
(`lin0.model.1.weight` ... `lin4.model.1.weight`, the LPIPS `vgg.pth`). Differences from the public
code, which are switchable: the code multiplies LPIPS by 2 (`scale`), and maps [-1, 1] to ImageNet
statistics with a sign error (`code_input_norm=True` reproduces it: it subtracts (1 - 2 mu)
instead of (2 mu - 1) before dividing by 2 sigma).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medmim.errors import ConfigError

#: torchvision VGG16 `features` layout: conv widths, "M" = max-pool.
VGG16_LAYOUT = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
#: indices in `features` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
LPIPS_TAPS = (3, 8, 15, 22, 29)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_tensors(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a `.safetensors` or torch file (`torch.load(weights_only=True)`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"perceptual loss: weights file '{path}' does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else {}


def vgg16_features() -> nn.Sequential:
    """VGG16's conv stack with torchvision's module indices (up to relu5_3)."""
    layers: list[nn.Module] = []
    cin = 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, int(item), 3, padding=1), nn.ReLU(inplace=False)]
            cin = int(item)
    return nn.Sequential(*layers)


class LPIPSLoss(nn.Module):
    """Slice-wise LPIPS-VGG16 between x and x_hat in [-1, 1] (frozen, eval mode).

    Args:
        weights: path to VGG16 weights with torchvision `features.*` keys (required).
        lin_weights: optional path to LPIPS linear heads (`lin{i}.model.1.weight`); "" = look for
            them in `weights`, else use uniform channel weights.
        max_slices: slices drawn per sample (24).
        scale: factor on the result (LPIPS: 1; PUMIT code: 2).
        code_input_norm: reproduce the code's input normalisation sign error.
    """

    def __init__(
        self,
        weights: str = "",
        lin_weights: str = "",
        max_slices: int = 24,
        scale: float = 1.0,
        code_input_norm: bool = False,
    ) -> None:
        super().__init__()
        if not weights:
            raise ConfigError(
                "perceptual loss requested without weights: medmim cannot download VGG16/LPIPS. "
                "Set method.perceptual_weights=/path/to/vgg16.pth (torchvision 'features.*' keys; "
                "optionally method.perceptual_lin_weights=/path/to/lpips/vgg.pth) or switch it off "
                "with method.perceptual_weight=0"
            )
        self.features = vgg16_features()
        state = load_tensors(weights)
        feats = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        missing = sorted(set(self.features.state_dict()) - set(feats))
        if missing:
            raise ConfigError(
                f"perceptual loss: '{weights}' lacks VGG16 tensors features.{missing[0]} "
                f"(and {len(missing) - 1} more)"
            )
        self.features.load_state_dict({k: feats[k] for k in self.features.state_dict()})
        lin = load_tensors(lin_weights) if lin_weights else state
        widths = [64, 128, 256, 512, 512]
        heads = [
            lin.get(f"lin{i}.model.1.weight", torch.full((1, c, 1, 1), 1.0 / c))
            for i, c in enumerate(widths)
        ]
        for i, (head, c) in enumerate(zip(heads, widths)):
            self.register_buffer(f"lin{i}", head.reshape(1, c, 1, 1).float(), persistent=False)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        shift = (1 - 2 * mean) if code_input_norm else (2 * mean - 1)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("div", (2 * std).view(1, 3, 1, 1), persistent=False)
        self.max_slices, self.scale = int(max_slices), float(scale)
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> LPIPSLoss:
        """Always eval (frozen feature network)."""
        return super().train(False)

    def _slices(self, x: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
        b, c, d = x.shape[:3]
        if c not in (1, 3):
            raise ValueError(f"perceptual loss: needs 1 or 3 channels, got {c}")
        if d > self.max_slices:
            idx = torch.rand(b, d, device=x.device).argsort(dim=1)[:, : self.max_slices]
            gather = idx.view(b, 1, -1, 1, 1).expand(-1, c, -1, *x.shape[3:])
            x, x_hat = x.gather(2, gather), x_hat.gather(2, gather)
        flat = [
            v.transpose(1, 2).reshape(-1, c, *v.shape[3:]).expand(-1, 3, -1, -1) for v in (x, x_hat)
        ]
        return flat[0], flat[1]

    def forward(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """LPIPS distance, averaged over slices: x, x_hat (B, C, D, H, W) in [-1, 1] -> 0-d."""
        a, b = self._slices(x, x_hat)
        h = torch.cat([a, b]).float()
        h = (h - self.shift) / self.div
        total = h.new_zeros(())
        heads = [self.lin0, self.lin1, self.lin2, self.lin3, self.lin4]
        for i, layer in enumerate(self.features[: LPIPS_TAPS[-1] + 1]):
            h = layer(h)
            if i in LPIPS_TAPS:
                fa, fb = (F.normalize(f, dim=1, eps=1e-10) for f in h.chunk(2))
                total = total + ((fa - fb) ** 2 * heads[LPIPS_TAPS.index(i)]).sum(dim=1).mean()
        return self.scale * total
