"""medmim.eval."""
