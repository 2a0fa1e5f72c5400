"""medmim.cli."""
