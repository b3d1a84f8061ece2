"""Atomic file writes shared by the long jobs (sweep, training, benchmarks).

A killed process leaves either the old file or the new one, never half of
one: the data go to a temporary file beside the target, are fsynced, and
the temporary is renamed over the target (``os.replace`` is atomic on POSIX).
A write that fails (a full disk, Ctrl-C) removes its temporary and leaves
the target as it was.  A kill -9 leaves the temporary (``NAME.HOST-PID.tmp``): the next command that owns the
folder removes it (``remove_stale_temporaries``), if it runs on the same host.
"""

from __future__ import annotations

import functools
import io
import os
import re
import socket
from pathlib import Path


def refuse_directory(path) -> None:
    """Raise SvdgradError if a directory stands where a long job writes the file ``path``: os.replace failed
    with a bare '[Errno 21] Is a directory' (or 'Directory not empty'), often after the work."""
    if os.path.isdir(path):
        from ._errors import SvdgradError

        raise SvdgradError(f"Expected {path} to be a file, which this command writes; it is a directory. Move or "
                           f"rename it, or choose another --out.")


#: What each long command leaves at the top of its --out folder, saying whose output the folder holds.
OUTPUT_MARKERS = {"sweep": ("results.csv",), "study": ("study.json",), "bench": ("raw",)}


def output_conflict(out, command: str, *, overwrite: bool = False) -> str | None:
    """Why ``svdgrad {command}`` must not write its REPORT.md into ``out``, or None.

    Each command refused to replace its own finished results, but wrote its REPORT.md over another's: a
    sweep's report redrawn by ``bench --report-only``, a study's by a sweep.  Another command's output is
    refused whatever the flags (``--overwrite`` replaces a command's own results only); a REPORT.md without
    this command's own marker (a report some other tool wrote) is refused unless ``--overwrite``.
    """
    out = Path(out)
    if not out.is_dir():
        return None
    for other, names in OUTPUT_MARKERS.items():
        found = [n for n in names if other != command and (out / n).exists()]
        if found:
            return (f"{out} holds the output of `svdgrad {other}` ({found[0]}); `svdgrad {command}` would write "
                    f"its REPORT.md over that one's. Choose another --out.")
    mine = OUTPUT_MARKERS.get(command, ())
    if (out / "REPORT.md").exists() and not any((out / n).exists() for n in mine) and not overwrite:
        return (f"{out} holds a REPORT.md that `svdgrad {command}` did not write (no {' or '.join(mine)} beside "
                f"it). Choose another --out, or pass --overwrite to replace it.")
    return None


def write_atomic(path, data: str | bytes) -> None:
    """Write ``data`` (text or bytes) to ``path`` atomically."""
    path = Path(path)
    refuse_directory(path)
    tmp = path.with_name(f"{path.name}.{host_token()}-{os.getpid()}.tmp")
    payload = data.encode() if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a failed write (disk full, Ctrl-C) leaves the target as it was, and no temporary
        tmp.unlink(missing_ok=True)
        raise


def savefig_atomic(fig, path, **savefig_kwargs) -> None:
    """``fig.savefig(path, **savefig_kwargs)`` atomically: drawn in memory (PNG unless ``format`` is given),
    then written by ``write_atomic``, so a failed or killed write keeps the previous figure."""
    buf = io.BytesIO()
    fig.savefig(buf, **{"format": "png", **savefig_kwargs})
    write_atomic(path, buf.getvalue())


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (another user's included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@functools.lru_cache(maxsize=None)
def host_token() -> str:
    """This host's name as the temporaries carry it: letters, digits and underscores only."""
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"


def remove_stale_temporaries(folder) -> list[Path]:
    """Remove the temporaries of ``write_atomic`` (``NAME.HOST-PID.tmp``) left in ``folder`` by a kill -9 of
    their writer: those of this host whose PID is no live process here.  A live writer's is kept (it may be
    writing it now), and so is another host's (its PID means nothing here: in a folder shared between hosts
    it may be a live writer's) and anything else.  A name from before hosts were recorded (``NAME.PID.tmp``)
    counts as this host's.  Called by the command that owns the folder.  Returns the paths removed."""
    removed = []
    for p in sorted(Path(folder).glob("*.*.tmp")):
        tag = p.name[: -len(".tmp")].rpartition(".")[2]
        host, _, pid = tag.rpartition("-")
        if pid.isdigit() and host in ("", host_token()) and p.is_file() and not _alive(int(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def save_atomic(obj, path) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(path, buf.getvalue())


def read_json(path, *, fix: str):
    """json.load of ``path``; a damaged file (torn, truncated, binary garbage) raises SvdgradError naming it and
    ``fix``, not a JSONDecodeError or UnicodeDecodeError traceback."""
    import json

    from ._errors import SvdgradError

    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SvdgradError(f"Expected JSON in {path}; it is damaged ({type(exc).__name__}: {exc}). {fix}") from None


def read_jsonl(path, *, fix: str, torn_tail: bool = False) -> list[dict]:
    """The JSON objects of ``path``, one a line; a damaged line (not JSON, not an object, not UTF-8) raises
    SvdgradError naming the file, the line and ``fix``.

    ``torn_tail``: the file is append-only, so what a kill -9 leaves (bytes after the last newline, the
    torn last line) is not an entry: it is ignored (the writer drops it before it appends).  Without it,
    every line counts, the last one included.
    """
    import json

    from ._errors import SvdgradError

    data = Path(path).read_bytes()
    if torn_tail:
        data = data[: data.rfind(b"\n") + 1]
    entries = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line.decode())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        else:
            if isinstance(entry, dict):
                entries.append(entry)
                continue
            why = f"a JSON {type(entry).__name__}, not an object"
        raise SvdgradError(f"Expected one JSON object per line in {path}; it is damaged at line {number} ({why}). "
                           f"{fix}")
    return entries


def cpu_name() -> str:
    """The host CPU's model name (Linux /proc/cpuinfo), else what ``platform`` says."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance() -> dict:
    """What a result was computed with: the host CPU, torch, svdgrad, and the git commit of a source checkout.

    The long jobs write it beside their results: the same code rounds differently on another host's
    LAPACK, so a float64 result reproduces bit for bit only with the host and the commit.  ``commit`` is
    None outside a git checkout (an installed wheel); ``dirty`` says whether tracked files differ from it.
    """
    import subprocess

    import torch

    from . import __version__

    info = {"cpu": cpu_name(), "torch": torch.__version__, "svdgrad": __version__, "commit": None, "dirty": None}
    root = Path(__file__).resolve().parents[1]
    if (root / ".git").exists():
        try:
            head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  timeout=10)
            if head.returncode == 0:
                info["commit"] = head.stdout.strip()
                st = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
                info["dirty"] = bool(st.stdout.strip()) if st.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            pass
    return info
