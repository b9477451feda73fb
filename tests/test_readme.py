"""The README tells the truth: its quickstart runs, and its commands match .ci/run."""

import pathlib
import re

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


def test_ci_runs_exactly_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    assert commands[0] == 'pip install -e ".[examples]" && python -m gradxform.demo'
    test_command = commands[1]
    assert "[test]" in test_command and "pytest" in test_command
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines
