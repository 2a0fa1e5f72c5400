"""medmim: masked image modeling and self-distillation for 3D medical images.

The Python API (imported on first use, so `import medmim` stays cheap):

- `medmim.load_encoder(path, device="cpu") -> Encoder`: `.embed(volume)`, `.features(x)`,
  `.meta` (see `medmim.eval.embed`);
- `medmim.load_into_swinunetr(path, out_channels=K, ...)`: MONAI's `SwinUNETR` with the
  exported Swin weights in its `swinViT` (see `medmim.api`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it (imported lazily by `__getattr__`).
_LAZY = {"load_encoder": "medmim.api", "load_into_swinunetr": "medmim.api", "Encoder": "medmim.api"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medmim' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
