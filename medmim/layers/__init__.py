"""medmim.layers."""
