"""`medmim demo`: the whole study on synthetic CT phantoms, on a CPU, in minutes."""
