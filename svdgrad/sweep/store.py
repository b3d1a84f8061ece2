"""results.csv: an append-only, crash-safe table of result rows.

Each finished matrix appends its rows with one ``os.write`` on a file opened
with O_APPEND, followed by fsync, so a killed run leaves every finished cell
on disk.  If the kill lands inside a write, the torn last line (no newline)
is dropped on load, and ``repair`` truncates
it away before a resumed run appends; rows are keyed, so a resumed run
recomputes exactly the missing ones.  A file torn inside its header (no
complete first line) holds no rows: ``repair`` rewrites the header, never
leaves a headerless file.  Other files (approx.csv, grid.json,
REPORT.md, figures) are written to a temporary file and renamed.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from .._errors import SvdgradError
from .._io import write_atomic
from .cells import COLUMNS, KEY

_INT_KEYS = ("n", "log10_kappa", "seed")

#: The number columns of results.csv ('' is a missing value; nan and inf are numbers).
NUMERIC = tuple(c for c in COLUMNS if c not in KEY and c not in ("reference", "error"))

#: What to do about a damaged row of results.csv (the message names the file, the line and the damage).
RESULTS_FIX = ("Delete that line and run `svdgrad sweep` again with the same options and --resume: it "
               "recomputes the missing rows (or move the file away and start again with --overwrite).")
#: What to do when line 1 of results.csv is not its header (another program's table, garbage): deleting a line
#: leaves another line that is not the header in its place, and --resume keeps nothing of it.
RESULTS_HEADER_FIX = ("It is not a table `svdgrad sweep` wrote, so no row of it can be kept: run `svdgrad sweep` "
                      "again with --overwrite to start a new table in its place (or move the file away), or "
                      "write elsewhere with --out DIR.")


def format_value(v) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    return str(v)


def _csv_text(rows, columns, header: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(columns)
    for row in rows:
        w.writerow([format_value(row.get(c, "")) for c in columns])
    return buf.getvalue()


def write_table(path: Path, rows, columns) -> None:
    write_atomic(path, _csv_text(rows, columns, header=True))


def row_key(row: dict) -> tuple:
    return tuple(int(row[k]) if k in _INT_KEYS else row[k] for k in KEY)


class ResultStore:
    """results.csv with the columns of ``cells.COLUMNS``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def reset(self) -> None:
        """Start an empty table (header only)."""
        write_table(self.path, [], COLUMNS)

    def repair(self) -> int:
        """Create the file if missing; cut a torn last line; rewrite a torn header.  Returns the bytes removed."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            self.reset()
            return 0
        data = self.path.read_bytes()
        if b"\n" not in data:
            # Torn inside the header: cutting the torn line would leave an empty, headerless file.
            self.reset()
            return len(data)
        cut = len(data) - (data.rfind(b"\n") + 1)
        if cut:
            with open(self.path, "r+b") as f:
                f.truncate(len(data) - cut)
                f.flush()
                os.fsync(f.fileno())
        return cut

    def append(self, rows) -> None:
        if not rows:
            return
        data = _csv_text(rows, COLUMNS, header=False).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:  # (os.write may write less than asked; the rest follows)
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def load(self) -> list[dict]:
        """Complete rows as dicts of strings (header checked; a torn last line dropped, other damage raises)."""
        return read_rows(self.path)

    def has_rows(self) -> bool:
        """True if the file holds at least one complete row, or is not a results table at all."""
        try:
            return bool(self.load())
        except SvdgradError:
            return True

    def done_keys(self) -> set[tuple]:
        return {row_key(r) for r in self.load()}


def read_rows(path: Path, columns=COLUMNS, *, ints=_INT_KEYS, floats=NUMERIC, fix=RESULTS_FIX,
              header_fix=RESULTS_HEADER_FIX) -> list[dict]:
    """The complete rows of a table written by this module, as dicts of strings.

    What a kill can leave is not an error: the torn last line (cut at any byte, even inside a
    character) is dropped.  Anything else (another header, bytes that are not UTF-8 text, a complete
    line with the wrong number of fields, a row whose ``ints`` / ``floats`` columns are not numbers)
    raises SvdgradError naming the file, the line and what to do: ``fix`` for a damaged row,
    ``header_fix`` when line 1 is not the header (the header is checked first: deleting a row cannot
    repair it).
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete, torn = data[: data.rfind(b"\n") + 1], data[data.rfind(b"\n") + 1:]
    header_text = _csv_text([], columns, header=True)

    def damaged(line: int, what: str) -> SvdgradError:
        advice = header_fix if line == 1 else fix
        return SvdgradError(f"Expected a CSV table in {path}, as `svdgrad sweep` writes it; line {line} {what}. "
                            f"{advice}")

    if not complete:
        if header_text.encode().startswith(torn):  # (empty, or a kill inside the header)
            return []
        raise damaged(1, f"is not its header: received {torn[:60]!r}; expected {header_text.strip()!r}")
    first = complete[: complete.index(b"\n") + 1]
    try:
        header = next(csv.reader(io.StringIO(first.decode())))
    except UnicodeDecodeError as exc:
        raise damaged(1, f"is not its header, nor text ({exc.reason} at byte {exc.start})") from None
    if tuple(header) != tuple(columns):
        raise damaged(1, f"is another header: received {','.join(header)[:200]!r}; expected "
                         f"{header_text.strip()!r}")
    try:
        text = complete.decode()
    except UnicodeDecodeError as exc:
        raise damaged(complete.count(b"\n", 0, exc.start) + 1, f"is not text ({exc.reason} at byte {exc.start})") \
            from None
    reader = csv.reader(io.StringIO(text))
    next(reader)
    rows = []
    for rec in reader:
        if not rec:  # a blank line holds nothing (as in read_jsonl)
            continue
        if len(rec) != len(columns):  # (a kill leaves only a torn last line, cut above; this line is complete)
            raise damaged(reader.line_num, f"has {len(rec)} field{'' if len(rec) == 1 else 's'}, expected "
                                           f"{len(columns)}: received {','.join(rec)[:60]!r}")
        row = dict(zip(columns, rec))
        for c, kind in [(c, int) for c in ints if c in row] + [(c, to_float) for c in floats if c in row]:
            try:
                kind(row[c])
            except ValueError:
                raise damaged(reader.line_num, f"has {c} = {row[c][:40]!r}, not a number") from None
        rows.append(row)
    return rows


def to_float(s: str) -> float:
    """CSV cell -> float; '' -> nan."""
    return float(s) if s not in ("", None) else math.nan
