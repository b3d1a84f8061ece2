"""The README's API snippet runs as written (issue 12: it stopped with NameError: X)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_api_snippet_runs():
    text = README.read_text()
    api = text[text.index("## API"):]
    block = re.search(r"```python\n(.*?)```", api, re.S).group(1)
    exec(compile(block, "README.md#API", "exec"), {})


def test_every_report_is_linked_and_exists():
    text = README.read_text()
    links = re.findall(r"\]\((reports/[^)]+)\)", text)
    assert links, "the README links its reports"
    for link in links:
        assert (README.parent / link.split("#")[0]).exists(), link
