"""medmim.masking: every module here is imported by its registry on first lookup."""
