"""`python -m pretrainlab ...`, which is also how torchrun launches it."""

from pretrainlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
