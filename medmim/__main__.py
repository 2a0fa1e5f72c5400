"""`python -m medmim ...` (also what `torchrun -m medmim pretrain ...` runs)."""

from medmim.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
