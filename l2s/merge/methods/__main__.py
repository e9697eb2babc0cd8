"""``python -m l2s.merge.methods --markdown``: print the README's method table from the registry."""

import argparse
import sys

from l2s.merge.methods import markdown_table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m l2s.merge.methods", description=__doc__)
    p.add_argument("--markdown", action="store_true", help="print the method table as Markdown (the default)")
    p.parse_args(argv)
    sys.stdout.write(markdown_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
