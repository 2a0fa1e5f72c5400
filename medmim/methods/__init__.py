"""Self-supervised methods, one file each; importing the package registers them all."""

from medmim.methods.base import PretrainMethod
from medmim.registry import import_submodules

import_submodules(__name__)

__all__ = ["PretrainMethod"]
