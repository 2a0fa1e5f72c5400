"""medmim.heads: every module here is imported by its registry on first lookup."""
