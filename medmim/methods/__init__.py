"""Self-supervised methods, one file each; METHODS imports them all on first lookup."""
