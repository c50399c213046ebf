"""``python -m rtseg`` is the CLI (so ``torchrun -m rtseg train`` works)."""

from rtseg.cli import run_main

if __name__ == "__main__":
    run_main()
