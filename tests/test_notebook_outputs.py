"""The notebooks in notebooks/ are stored executed, with clean outputs.

A reader browsing the repository sees each notebook's printouts and plots
without running it, and the docs site (myst-nb) renders each one as a page with
one title. ``pytest --nbmake`` checks separately that every notebook still runs
from scratch; this file checks what is stored:

* the first cell is markdown: one ``# Title`` on its first line, and the
  ``pip install -e ".[...]"`` line naming the extra the notebook needs;
* headings never skip a level (``#``, then ``##``, then ``###``) and there is
  no second level-1 heading;
* every code cell was executed, top to bottom in one run: execution counts
  1, 2, ..., n in order;
* no output is an error or a stderr stream, and no text output holds ANSI
  escape codes;
* a notebook that plots stores at least one embedded PNG;
* no source or text output holds a local absolute path (tests/test_user_text.py
  searches the notebooks for words about anything but the library);
* the notebook metadata holds the ``python3`` kernelspec and the language,
  nothing else (no widget state), and each file stays small.

To refresh the stored outputs after editing a notebook (nbclient runs it in
notebooks/, as nbmake does)::

    jupyter execute --inplace notebooks/NAME.ipynb
"""

import json
import pathlib
import re

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

MAX_BYTES = 350_000
PIP_LINE = 'pip install -e ".['
LOCAL_PATHS = ("/work/", "/root/", "/tmp/")
HEADING = re.compile(r"^(#{1,6})[ \t]+\S")
FENCE = re.compile(r"^\s*(```|~~~)")
ANSI = re.compile(r"\x1b\[")
# A code cell that calls one of these has something to show when it runs.
SHOWS_SOMETHING = re.compile(r"\bprint\(|\bplt\.show\(|\bdisplay\(")
TEXT_MIMES = ("text/plain", "text/html", "text/markdown", "text/latex", "application/json")


def _source(cell):
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _text(value):
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value)


def _output_texts(output):
    """Every piece of text an output stores (its images excluded)."""
    kind = output["output_type"]
    if kind == "stream":
        yield _text(output.get("text", ""))
    elif kind in ("execute_result", "display_data"):
        for mime, value in output.get("data", {}).items():
            if mime in TEXT_MIMES or mime.startswith("text/"):
                yield _text(value)
    elif kind == "error":
        yield output.get("ename", "") + ": " + output.get("evalue", "")
        yield "\n".join(output.get("traceback", []))


def _headings(cells):
    """(level, text, cell index) of every markdown heading, outside fenced code blocks."""
    found = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        in_fence = False
        for line in _source(cell).splitlines():
            if FENCE.match(line):
                in_fence = not in_fence
                continue
            match = None if in_fence else HEADING.match(line)
            if match:
                found.append((len(match.group(1)), line.strip(), index))
    return found


@pytest.fixture(params=NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def notebook(request):
    path = request.param
    return path, json.loads(path.read_text(encoding="utf-8"))


def _code_cells(nb):
    return [cell for cell in nb["cells"] if cell["cell_type"] == "code"]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 5, NOTEBOOKS


def test_title_cell(notebook):
    path, nb = notebook
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown", f"{path.name}: the first cell must be markdown"
    lines = _source(first).splitlines()
    assert lines and re.fullmatch(r"# \S.*", lines[0]), f"{path.name}: first line {lines[:1]} is not '# Title'"
    assert PIP_LINE in _source(first), f"{path.name}: the first cell does not say which extra it needs"
    pip_line = next(line for line in lines if PIP_LINE in line)
    assert "Needs `pip install -e \".[" in pip_line, f"{path.name}: {pip_line!r}"


def test_headings_never_skip_a_level(notebook):
    path, nb = notebook
    headings = _headings(nb["cells"])
    assert headings and headings[0][0] == 1 and headings[0][2] == 0, f"{path.name}: {headings[:1]}"
    titles = [h for h in headings if h[0] == 1]
    assert len(titles) == 1, f"{path.name}: more than one level-1 heading: {titles}"
    for (previous, _, _), (level, text, index) in zip(headings, headings[1:]):
        assert level <= previous + 1, f"{path.name}, cell {index}: {text!r} skips a level after h{previous}"


def test_executed_in_order(notebook):
    path, nb = notebook
    code = _code_cells(nb)
    assert code, f"{path.name} has no code cell"
    counts = [cell.get("execution_count") for cell in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: execution counts {counts}"
    for number, cell in enumerate(code, start=1):
        for output in cell.get("outputs", []):
            if output["output_type"] == "execute_result":
                assert output.get("execution_count") == number, f"{path.name}, code cell {number}"
        if SHOWS_SOMETHING.search(_source(cell)):
            assert cell.get("outputs"), f"{path.name}: code cell {number} shows something but stores no output"


def test_outputs_are_clean(notebook):
    path, nb = notebook
    for number, cell in enumerate(_code_cells(nb), start=1):
        for output in cell.get("outputs", []):
            where = f"{path.name}, code cell {number}"
            assert output["output_type"] != "error", f"{where}: {output.get('ename')}: {output.get('evalue')}"
            if output["output_type"] == "stream":
                assert output.get("name") == "stdout", f"{where}: a {output.get('name')} stream: {_text(output['text'])!r}"
            for text in _output_texts(output):
                assert not ANSI.search(text), f"{where}: ANSI escape codes in {text[:200]!r}"
                assert "Warning" not in text, f"{where}: a warning in the output: {text[:300]!r}"


def test_plots_are_embedded(notebook):
    path, nb = notebook
    if not any("matplotlib" in _source(cell) or "plt." in _source(cell) for cell in _code_cells(nb)):
        pytest.skip(f"{path.name} does not plot")
    pngs = [
        output["data"]["image/png"]
        for cell in _code_cells(nb)
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert pngs, f"{path.name} plots but stores no image/png output"
    assert all(isinstance(png, str) and png.strip() for png in pngs)


def test_no_local_paths(notebook):
    """(Words about how the work is organised are searched for in tests/test_user_text.py.)"""
    path, nb = notebook
    for index, cell in enumerate(nb["cells"]):
        texts = [("source", _source(cell))]
        texts += [("output", text) for output in cell.get("outputs", []) for text in _output_texts(output)]
        for kind, text in texts:
            for local in LOCAL_PATHS:
                assert local not in text, f"{path.name}, cell {index} {kind}: contains {local!r}"


def test_metadata_and_size(notebook):
    path, nb = notebook
    metadata = nb["metadata"]
    assert metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: {metadata.get('kernelspec')}"
    extra = set(metadata) - {"kernelspec", "language_info"}
    assert not extra, f"{path.name}: notebook metadata beyond the kernel and language: {sorted(extra)}"
    size = path.stat().st_size
    assert size < MAX_BYTES, f"{path.name} is {size} bytes: make its figures smaller"
