"""medmim.train."""
