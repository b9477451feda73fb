"""The README tells the truth: its quickstart runs, and its commands match .ci/run."""

import pathlib
import re
import textwrap

import jax

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
    assert len(snippets) >= 2
    for index, code in enumerate(snippets):
        # Blocks inside list items are indented.
        exec(compile(textwrap.dedent(code), f"README python block {index}", "exec"), {})  # noqa: S102


def test_keras_snippet_builds_the_documented_chain_and_averages():
    code = next(
        block for block in re.findall(r"```python\n(.*?)```", README, re.S) if "gx.keras" in block
    )
    namespace = {}
    exec(compile(code, "README Keras block", "exec"), namespace)  # noqa: S102
    state, params = namespace["state"], namespace["params"]
    # 8 calls with 4 accumulation steps: 2 real updates, and an average that moved.
    assert repr(namespace["tx"]).startswith("chain(static_loss_scale(loss_scale=128.0), accumulate_gradients(")
    assert float(gx.current_loss_scale(state)) == 128.0
    assert not all(
        (a == b).all() for a, b in zip(
            jax.tree.leaves(namespace["eval_params"]), jax.tree.leaves(params)
        )
    )


def test_ci_runs_exactly_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    assert commands[0] == 'pip install -e ".[examples]" && python -m gradxform.demo'
    test_command = commands[1]
    assert "[test]" in test_command and "pytest" in test_command
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines
