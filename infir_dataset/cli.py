"""`infir`: generate InF-IR records from seeds, build a Hub dataset repo from them, and push it."""

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from . import build_repo, generate, push_repo

    parser = argparse.ArgumentParser(prog="infir", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    generate.add_parser(commands)
    build_repo.add_parser(commands)
    push_repo.add_parser(commands)
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
