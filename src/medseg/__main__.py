"""``python -m medseg`` (used by ``torchrun -m medseg``)."""
from medseg.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
