"""Command line: ``svdgrad <command> ...`` / ``python -m svdgrad <command> ...``.

Each command lives in its own module, imported only when used, so that
``svdgrad --help`` and ``--version`` stay fast and a command whose optional
dependency is missing fails alone, with one line naming the extra to install.
A command module exposes ``main(command: str, argv: list[str]) -> int``.
"""

from __future__ import annotations

import importlib
import sys

from ._errors import SvdgradError

#: command -> (module implementing it, one-line description).
COMMANDS = {
    "sweep": ("svdgrad.sweep.cli",
              "condition-number sweep: gradient error of every method over κ, n, dtype and spectrum"),
    "report": ("svdgrad.sweep.cli", "redraw a sweep's REPORT.md and figures from its results.csv (no recomputation)"),
    "train": ("svdgrad.train.cli", "train a small CNN with covariance pooling (svdgrad.nn) on a dataset"),
    "study": ("svdgrad.train.cli", "run a study of training runs (e.g. the hybrid NS → SVD protocol) and its report"),
    "bench": ("svdgrad.bench.cli", "time every method against eigh and matmul floors; write a performance report"),
}

#: Optional dependencies -> the extra that installs them.
EXTRAS = {"ray": "cluster", "pytest": "bench", "pytest_benchmark": "bench", "hypothesis": "test",
          "skimage": "dev", "sklearn": "dev"}

EXIT_INTERRUPTED = 130


def _version() -> str:
    from . import __version__

    return __version__


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: svdgrad <command> [options]     (svdgrad <command> --help for a command's options)",
             "       svdgrad --version", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def missing_dependency(command: str, exc: ModuleNotFoundError) -> str:
    """One line naming the package that is missing and the extra that installs it."""
    name = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(name)
    fix = f'pip install "svdgrad[{extra}]"' if extra else f"pip install {name}"
    return f"svdgrad {command}: needs the Python package {name!r}, which is not installed; {fix}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"svdgrad {_version()}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"svdgrad: unknown command {command!r}; expected one of {', '.join(COMMANDS)}.", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[command][0])
        return int(module.main(command, rest) or 0)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "svdgrad":
            raise  # a broken installation, not a missing optional dependency
        print(missing_dependency(command, exc), file=sys.stderr)
        return 2
    except SvdgradError as exc:  # a command that does not report it itself (bench's report, a file in --out)
        print(f"svdgrad {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a command that has no resume line of its own
        print(f"svdgrad {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
