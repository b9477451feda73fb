"""The README tells the truth: its quickstart runs, its commands match .ci/run,
its links resolve, and its benchmark table is the committed benchmark run."""

import json
import pathlib
import re
import textwrap

import pytest

import gradxform as gx

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_quickstart_runs_and_prints_what_the_readme_says():
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    namespace = {}
    exec(compile(code, "README quickstart", "exec"), namespace)  # noqa: S102
    printed_in_readme = " ".join(
        line.lstrip("# ").strip() for line in code.splitlines() if line.startswith("# ")
    )
    assert repr(namespace["tx"]).replace(" ", "") == printed_in_readme.replace(" ", "")
    assert isinstance(namespace["tx"], gx.GradientTransformation)


def test_every_python_snippet_runs():
    snippets = re.findall(r"```python\n(.*?)```", README, re.S)
    assert snippets
    for index, code in enumerate(snippets):
        # Blocks inside list items are indented.
        exec(compile(textwrap.dedent(code), f"README python block {index}", "exec"), {})  # noqa: S102


def test_ci_runs_exactly_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    assert commands[0] == 'pip install -e ".[examples]" && python -m gradxform.demo'
    test_command = commands[1]
    assert "[test]" in test_command and "pytest" in test_command
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_the_readme_is_a_landing_page():
    assert len(README.splitlines()) <= 250
    # The two commands come first, before any other section.
    first_section = README.split("\n## ")[1]
    assert first_section.startswith("Run it") and first_section.count("```bash") == 2


def test_every_relative_link_resolves():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    relative = [link for link in links if "://" not in link]
    assert len(relative) >= 20
    missing = sorted(link for link in relative if not (ROOT / link).exists())
    assert not missing, missing


_TREES = {
    "1 leaf of 16M floats": "one_leaf",
    "195 leaves, 16M floats": "transformer",
    "5,000 leaves of 16 floats": "many_leaves",
}
_COLUMNS = ("step optax/gradxform", "step optax/gradxform-flat", "step optax/optax-again paired")


def _benchmark_rows():
    section = README.split("## Performance", 1)[1].split("\n## ", 1)[0]
    for line in [line for line in section.splitlines() if line.startswith("|")][2:]:
        tree, optimizer, *ratios = (cell.strip() for cell in line.strip("|").split("|"))
        yield _TREES[tree], optimizer.replace("clip + adamw", "clip_adamw"), ratios


def test_the_benchmark_table_is_the_committed_run():
    """Each ratio is the committed default run's, rounded as printed."""
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    assert not results["meta"]["smoke"]
    cases = {(case["tree"], case["optimizer"]): case["ratios"] for case in results["cases"]}
    rows = list(_benchmark_rows())
    assert len(rows) >= 5
    for tree, optimizer, ratios in rows:
        for column, printed in zip(_COLUMNS, ratios):
            if printed == "-":
                assert column not in cases[tree, optimizer], (tree, optimizer, column)
                continue
            decimals = len(printed.partition(".")[2])
            assert cases[tree, optimizer][column] == pytest.approx(float(printed), abs=0.51 * 10**-decimals), (
                tree, optimizer, column)
    assert "python -m benchmarks.run --markdown --json benchmarks/results.json" in README
