"""One command's --out never takes another command's finished output, and a bad --out is refused in one line.

Each long command refused to replace its own results but wrote its REPORT.md over another's (a read-only
review): ``bench --report-only`` on a sweep folder replaced the sweep's report with an empty one, a sweep
into a study folder replaced the study's, a study into a sweep folder the sweep's.  ``bench`` with a file as
--out ended in a traceback, and ``study --device bogus`` wrote study.json before refusing the device, so the
corrected command was then refused as a resume.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from svdgrad import __main__ as entry
from svdgrad._io import output_conflict

REPORT = "# a finished report\n"


def _folder(tmp_path: Path, kind: str) -> Path:
    """A folder holding the output of ``kind`` (its marker and a REPORT.md), or a bare REPORT.md."""
    out = tmp_path / kind
    out.mkdir()
    (out / "REPORT.md").write_text(REPORT)
    if kind == "sweep":
        (out / "results.csv").write_text("a,b\n")
    elif kind == "study":
        (out / "study.json").write_text("{}")
    elif kind == "bench":
        (out / "raw").mkdir()
    return out


SWEEP = ["sweep", "--methods", "exact", "--functions", "sqrt", "--dtypes", "float64", "--sizes", "16", "--kappas",
         "2", "--spectra", "logspaced", "--seeds", "0", "--jobs", "1", "--no-progress"]


def _bench(out, *extra):
    return ["bench", "--report-only", "--out", str(out), *extra]


def _study(out, *extra):
    return ["study", "hybrid", "--quick", "--out", str(out), *extra]


@pytest.mark.parametrize("command,kind", [("sweep", "study"), ("sweep", "bench"), ("bench", "sweep"),
                                          ("bench", "study"), ("study", "sweep"), ("study", "bench")])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_command_never_writes_over_another_commands_output(tmp_path, capsys, command, kind, overwrite):
    if command == "study" and overwrite:
        pytest.skip("svdgrad study has no --overwrite")
    out = _folder(tmp_path, kind)
    before = sorted(p.name for p in out.iterdir())
    flags = ["--overwrite"] if overwrite else []
    argv = {"sweep": SWEEP + ["--out", str(out), *flags], "bench": _bench(out, *flags),
            "study": _study(out, *flags)}[command]
    assert entry.main(argv) == 2
    err = capsys.readouterr().err
    assert f"holds the output of `svdgrad {kind}`" in err and "another --out" in err, err
    assert (out / "REPORT.md").read_text() == REPORT
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_report_no_command_wrote_is_replaced_only_with_overwrite(tmp_path, capsys):
    out = _folder(tmp_path, "other")
    assert entry.main(SWEEP + ["--out", str(out)]) == 2
    assert "did not write" in capsys.readouterr().err and (out / "REPORT.md").read_text() == REPORT
    assert output_conflict(out, "sweep", overwrite=True) is None
    assert output_conflict(out, "sweep") is not None
    assert output_conflict(_folder(tmp_path, "sweep"), "sweep") is None  # (its own: the resume/overwrite rules)


def test_bench_report_only_needs_measurements(tmp_path, capsys):
    for out in (tmp_path / "empty", tmp_path / "missing"):
        if out.name == "empty":
            out.mkdir()
        assert entry.main(_bench(out)) == 2
        assert "no raw/ folder" in capsys.readouterr().err
        assert not (out / "REPORT.md").exists()


@pytest.mark.parametrize("report_only", [False, True])
def test_bench_refuses_a_file_as_out_in_one_line(tmp_path, capsys, report_only):
    f = tmp_path / "afile"
    f.write_text("x")
    for out in (f, f / "sub"):
        argv = ["bench", "--profile", "quick", "--no-pytest", "--out", str(out)] + (["--report-only"] * report_only)
        assert entry.main(argv) == 2
        err = capsys.readouterr().err
        assert "is a file" in err and "Traceback" not in err, err
    assert f.read_text() == "x"


def test_study_refuses_an_unknown_device_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "st"
    assert entry.main(_study(out, "--device", "bogus")) == 2
    assert "--device auto, cpu or cuda[:i]; received 'bogus'" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
