"""medmim: masked image modeling and self-distillation for 3D medical images."""

__version__ = "0.1.0"
