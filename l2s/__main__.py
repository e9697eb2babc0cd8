"""``python -m l2s`` is the same entry point as the ``l2s`` console script."""

from l2s.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
