"""`infembed`: train, evaluate, publish and export InF-Embed models."""

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from . import evaluate, export, make_eval, push, train

    parser = argparse.ArgumentParser(prog="infembed", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    train.add_parser(commands)
    evaluate.add_parser(commands)
    make_eval.add_parser(commands)
    push.add_parser(commands)
    export.add_parser(commands)
    args, extra = parser.parse_known_args(argv)
    return args.func(args, extra) or 0


if __name__ == "__main__":
    sys.exit(main())
