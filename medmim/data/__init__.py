"""medmim.data."""
