"""What users read speaks of the library only, never of how its work is organised.

The README, the changelog, the docs, the notebooks (their prose, code and
stored outputs), the benchmark's report and the package's docstrings are
searched for a small list of words that only make sense inside the project's
own process.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

_PROCESS_WORDS = re.compile(
    r"\bsessions?\b|DESIGN\.md|\.\./shared|\bworkplace\b|\bsub-?agents?\b|\bfounding\b"
    r"|\btickets?\b|\bsprints?\b|\bgoals?\b|\bstill missed\b|\bcan_start_another\b"
    r"|\bissue(?:'s)? (?:#?\d+|requirements?)\b|\bthis issue\b|\bearlier work\b",
    re.I,
)
# In the benchmark, a "target" could only be a figure the project aimed at.
_BENCHMARK_WORDS = re.compile(r"\btargets?\b", re.I)


def _user_facing_files():
    patterns = ("README.md", "CHANGELOG.md", "docs/**/*.rst", "docs/conf.py", "notebooks/*.ipynb",
                "benchmarks/*.md", "benchmarks/*.py", "gradxform/**/*.py")
    files = {path for pattern in patterns for path in ROOT.glob(pattern) if "_build" not in path.parts}
    return sorted(files)


def _findings(path):
    text = path.read_text(encoding="utf-8")
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        words = _PROCESS_WORDS.findall(line)
        if path.parent.name == "benchmarks":
            words += _BENCHMARK_WORDS.findall(line)
        found += [f"{path.relative_to(ROOT)}:{number}: {word!r}" for word in words]
    return found


def test_user_facing_text_has_no_process_vocabulary():
    files = _user_facing_files()
    assert len(files) > 40 and ROOT / "README.md" in files
    findings = [finding for path in files for finding in _findings(path)]
    assert not findings, "\n".join(findings)


@pytest.mark.parametrize("text", [
    "as decided in an earlier session", "see ../shared/DESIGN.md", "Two goals are still missed",
    "Against the issue's requirements", "fixed in issue 20",
])
def test_the_word_list_catches_process_text(text):
    assert _PROCESS_WORDS.search(text)


@pytest.mark.parametrize("text", [
    "restore into the target jax.eval_shape(tx.init, params)", "optax#1414", "an issue with XLA",
])
def test_the_word_list_leaves_library_text_alone(text):
    assert not _PROCESS_WORDS.search(text)
