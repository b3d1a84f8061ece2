"""Command line: ``svdgrad <command> ...`` / ``python -m svdgrad <command> ...``.

Each command lives in its own module, imported only when used, so the core
library never imports the study dependencies (joblib, tqdm, ...).
A command module exposes ``main(command: str, argv: list[str]) -> int``.
"""

from __future__ import annotations

import importlib
import sys

#: command -> module implementing it.
COMMANDS = {
    "sweep": "svdgrad.sweep.cli",
    "report": "svdgrad.sweep.cli",
    "train": "svdgrad.train.cli",
    "study": "svdgrad.train.cli",
    "bench": "svdgrad.bench.cli",
}

USAGE = "usage: svdgrad {" + ",".join(COMMANDS) + "} [options]   (svdgrad <command> --help for details)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"svdgrad: unknown command {command!r}; expected one of {', '.join(COMMANDS)}.", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[command])
    except ModuleNotFoundError as exc:
        print(f"svdgrad: command {command!r} is not available ({exc}).", file=sys.stderr)
        return 2
    return int(module.main(command, rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
