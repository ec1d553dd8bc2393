"""The ``axn-fast`` command line: one sub-command per module in ``axn_fast.commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``, and imports heavy dependencies inside ``run`` only, so
``axn-fast --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> module; keep in the order shown by --help
COMMANDS = {
    "demo": "axn_fast.cli.demo",
    "example": "axn_fast.cli.example",
    "index": "axn_fast.cli.index",
    "search": "axn_fast.cli.search",
    "eval": "axn_fast.cli.eval",
}


def _available_commands():
    for name, module_name in COMMANDS.items():
        try:
            yield name, importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # a real import error inside the module
                raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="axn-fast", description="k-NN search with cross-encoders (AXN) on a C++ core."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available_commands():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
