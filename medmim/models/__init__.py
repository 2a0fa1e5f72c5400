"""medmim.models: every module here is imported by its registry on first lookup."""
