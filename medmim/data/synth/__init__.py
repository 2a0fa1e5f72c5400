"""Building blocks of the synthetic CT phantoms (`medmim.data.phantoms` is the public entry)."""
