"""``python -m ec2ir.emulator.fixes``: the fixes by name and why; with ``--readme-table``, the
README's table of them, to paste under "The embedded emulator"."""

from __future__ import annotations

import argparse
import textwrap

from ec2ir.emulator.fixes.catalogue import CATALOGUE, readme_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ec2ir.emulator.fixes", description=__doc__)
    parser.add_argument("--readme-table", action="store_true", help="print the README's table of the fixes")
    args = parser.parse_args(argv)
    if args.readme_table:
        print(readme_table(), end="")
        return 0
    for fix in CATALOGUE:
        print(f"{fix.name}\n{textwrap.indent(textwrap.fill(fix.why, 96), '    ')}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
