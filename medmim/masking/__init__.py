"""medmim.masking: importing the package registers every module in it."""

from medmim.registry import import_submodules

import_submodules(__name__)
