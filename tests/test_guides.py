"""The code in the documentation runs: every page's Python blocks and doctests.

Each page runs in a fresh process (``tests/guide_code.py``), on 8 fake CPU
devices so the sharding guide can build its meshes, with Keras on JAX, in a
temporary working directory, so a page can neither lean on another page nor
leave files behind.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests.guide_code import is_shown_only, python_blocks

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted(
    path for path in (ROOT / "docs").rglob("*.rst")
    if "_build" not in path.parts and "api" not in path.relative_to(ROOT / "docs").parts
)


def _environment():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["KERAS_BACKEND"] = "jax"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.mark.parametrize("page", PAGES, ids=lambda path: path.relative_to(ROOT / "docs").as_posix())
def test_page_code_runs(page, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "guide_code.py"), str(page)],
        cwd=tmp_path, env=_environment(), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, (result.stdout[-10000:] + result.stderr[-10000:])
    assert not list(tmp_path.iterdir()), f"{page.name} left files behind: {list(tmp_path.iterdir())}"


def test_guides_hold_executed_code():
    """Every guide shows code, and only multi-host code may be shown without running."""
    for page in PAGES:
        if page.parent.name != "guides":
            continue
        text = page.read_text()
        blocks = python_blocks(text)
        assert blocks or ">>> " in text, f"{page.name} has no executed code"
        for line, options, code in blocks:
            if is_shown_only(options):
                assert "jax.distributed" in code, f"{page.name}:{line} is shown but not run"


# What a page's code may import beyond the core install (jax, numpy), by the package to install.
_EXTRA_PACKAGES = {
    "flax": "flax", "optax": "optax", "keras": "keras", "haiku": "dm-haiku", "equinox": "equinox",
    "orbax": "orbax-checkpoint", "sklearn": "scikit-learn", "matplotlib": "matplotlib", "torch": "torch",
}
_IMPORT = re.compile(r"^\s*(?:import|from)\s+(\w+)", re.M)


def test_each_block_says_what_it_needs_beyond_the_core_install():
    """A block that imports an optional package comes after a "Needs ``package``" line."""
    for page in PAGES:
        text = page.read_text()
        lines = text.splitlines()
        for line, _, code in python_blocks(text):
            before = "\n".join(lines[:line])
            for module in set(_IMPORT.findall(code)) & set(_EXTRA_PACKAGES):
                assert f"Needs ``{_EXTRA_PACKAGES[module]}``" in before, (
                    f"{page.name}:{line} imports {module}; say 'Needs ``{_EXTRA_PACKAGES[module]}``' before it")


def test_the_block_parser_reads_options_and_indented_bodies():
    text = (
        "Title\n=====\n\n* a list item:\n\n  .. code-block:: python\n     :class: not-run\n\n"
        "     x = 1\n\n     y = x + 1\n\n  after\n\n.. code-block:: python\n\n   z = 3\n"
    )
    blocks = python_blocks(text)
    assert [(line, options, code) for line, options, code in blocks] == [
        (6, {"class": "not-run"}, "x = 1\n\ny = x + 1"),
        (15, {}, "z = 3"),
    ]
    assert is_shown_only(blocks[0][1]) and not is_shown_only(blocks[1][1])
