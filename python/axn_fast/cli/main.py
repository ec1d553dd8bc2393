"""The ``axn-fast`` command line: one sub-command per module in ``axn_fast.cli``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``, and imports heavy dependencies inside ``run`` only, so
``axn-fast --help`` stays fast. A command parses its flags and calls the library.

One error convention for every command, implemented here once: a failure prints one
line ``axn-fast <command>: error: <what, which flag or file>`` on stderr and exits with

* 2 for a usage error: argparse's own checks (every numeric flag has a ranged
  ``type=``, see :mod:`axn_fast.cli._args`) and :class:`~axn_fast.cli._args.UsageError`
  raised by a command for a flag it can only check against the data;
* 1 for a runtime error: anything else raised while the command runs (a missing or
  unreadable file, a bad file content, a cross-encoder failure, ...);
* 130 when interrupted (Ctrl-C).

``--debug`` (before or after the command name) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from types import ModuleType
from typing import Iterator, NoReturn, Optional, Sequence, Tuple

from axn_fast.cli._args import UsageError

# sub-command -> module; keep in the order shown by --help
COMMANDS = {
    "demo": "axn_fast.cli.demo",
    "example": "axn_fast.cli.example",
    "index": "axn_fast.cli.index",
    "search": "axn_fast.cli.search",
    "eval": "axn_fast.cli.eval",
    "train-ce": "axn_fast.cli.train_ce",
    "build-subset": "axn_fast.cli.build_subset",
    "index-cost": "axn_fast.cli.index_cost",
    "serve": "axn_fast.cli.serve",
}

EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

# Exceptions that describe bad input or a failed resource: their message is the whole story.
_EXPECTED = (ValueError, OSError, ImportError, LookupError, RuntimeError, TypeError)


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line error format (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


def _available_commands() -> Iterator[Tuple[str, ModuleType]]:
    for name, module_name in COMMANDS.items():
        try:
            yield name, importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # a real import error inside the module
                raise


def build_parser() -> argparse.ArgumentParser:
    """The ``axn-fast`` parser with one sub-parser per available command."""
    parser = _Parser(prog="axn-fast", description="k-NN search with cross-encoders (AXN) on a C++ core.")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in _available_commands():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        # SUPPRESS: a sub-parser default would overwrite `axn-fast --debug COMMAND`
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the Python traceback of an error")
        p.set_defaults(_run=module.run)
    return parser


def _report(command: str, exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (KeyError, UnicodeDecodeError)) or not isinstance(exc, _EXPECTED):
        msg = f"{type(exc).__name__}: {msg}"
    if not isinstance(exc, _EXPECTED):  # a bug rather than bad input: say how to see more
        msg += " (run with --debug for the traceback)"
    return f"axn-fast {command}: error: {msg}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``axn-fast`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help (0) or a usage error already printed (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    command: str = args.command
    try:
        return int(args._run(args) or 0)
    except SystemExit as exc:  # a command that still exits with a message of its own
        if exc.code is None or isinstance(exc.code, int):
            return int(exc.code or 0)
        if args.debug:
            raise
        text = str(exc.code)
        for prefix in (f"axn-fast {command}: error: ", f"axn-fast {command}: ", "axn-fast: "):
            text = text[len(prefix):] if text.startswith(prefix) else text
        print(f"axn-fast {command}: error: {text}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"axn-fast {command}: error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(_report(command, exc), file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
