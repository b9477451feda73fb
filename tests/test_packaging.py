"""Packaging tells the truth: the declared minimums work, the version, licence
and changelog agree with ``pyproject.toml``.

The slow test builds a fresh virtual environment, installs gradxform with
exactly the lowest jax, jaxlib and numpy that ``pyproject.toml`` declares, and
runs a jitted step and ``state_shardings`` there. It downloads those wheels
(about 150 MB), so it needs network access to the package index.
"""

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import gradxform as gx

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]

# The lowest Python that each jax minimum supports: the "Requires-Python" of
# that jax release's metadata (jax 0.7.0 and later: >=3.11). When the jax
# minimum in pyproject.toml moves, add its entry here after checking that
# release's metadata; requires-python must then follow it.
MIN_PYTHON_OF_JAX = {"0.7.2": (3, 11)}

# SHA-256 of the Apache License 2.0 text as published at
# https://www.apache.org/licenses/LICENSE-2.0.txt (the same bytes ship as the
# LICENSE of jax, optax and many others).
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"

# The packages whose lowest releases the slow test installs together.
PINNED_MINIMUMS = ("jax", "jaxlib", "numpy")


def _dependency(name: str) -> Requirement:
    matches = [Requirement(r) for r in PROJECT["dependencies"] if Requirement(r).name == name]
    assert len(matches) == 1, f"pyproject.toml must list {name} once in dependencies"
    return matches[0]


def _minimum(name: str) -> str:
    """The version in the one ``>=`` bound that pyproject declares for ``name``."""
    specifier = _dependency(name).specifier
    lower = [s for s in specifier if s.operator == ">="]
    assert len(lower) == 1, f"{name}: expected exactly one '>=' bound, got '{specifier}'"
    return lower[0].version


def _requires_python_floor() -> tuple[int, int]:
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)", PROJECT["requires-python"].strip())
    assert match, f"requires-python should be a plain lower bound, got {PROJECT['requires-python']!r}"
    return int(match[1]), int(match[2])


# --- version -----------------------------------------------------------------


def test_version_is_the_installed_metadata_and_pyproject_version():
    assert gx.__version__ == importlib.metadata.version("gradxform")
    assert gx.__version__ == PROJECT["version"]
    Version(gx.__version__)  # a valid PEP 440 version


def test_version_falls_back_when_gradxform_is_not_installed():
    # A fresh interpreter in which the package metadata cannot be found, as in
    # a clone run with only PYTHONPATH set.
    script = textwrap.dedent(
        """
        import importlib.metadata

        def not_installed(name):
            raise importlib.metadata.PackageNotFoundError(name)

        importlib.metadata.version = not_installed
        import gradxform
        print(gradxform.__version__)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=300, check=True,
    )
    version = out.stdout.strip()
    assert version == "0+unknown"
    assert Version(version).local == "unknown"  # never equal to a release


# --- changelog ---------------------------------------------------------------


def test_changelog_latest_release_is_the_package_version():
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\](.*)$", text, flags=re.MULTILINE)
    assert headings, "CHANGELOG.md has no '## [version]' headings"
    assert headings[0][0] == "Unreleased", "the first section should be [Unreleased]"
    released = [(name, rest) for name, rest in headings if name != "Unreleased"]
    assert released, "CHANGELOG.md has no released version"
    latest, rest = released[0]
    assert latest == PROJECT["version"] == gx.__version__
    assert re.fullmatch(r" - \d{4}-\d{2}-\d{2}", rest), f"[{latest}] needs ' - YYYY-MM-DD', got {rest!r}"
    # Released sections are newest first.
    versions = [Version(name) for name, _ in released]
    assert versions == sorted(versions, reverse=True)
    # Every heading has its link reference at the bottom.
    for name, _ in headings:
        assert re.search(rf"^\[{re.escape(name)}\]: https://", text, flags=re.MULTILINE), name


# --- licence -----------------------------------------------------------------


def test_license_file_is_the_apache_2_0_text():
    data = (REPO / "LICENSE").read_bytes()
    text = data.decode("utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert hashlib.sha256(data).hexdigest() == APACHE_2_0_SHA256


def test_pyproject_declares_the_license_by_spdx_expression():
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    # PEP 639: with a license expression, License :: classifiers are an error.
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]


# --- Python and dependency bounds --------------------------------------------


def test_requires_python_is_what_the_jax_minimum_supports():
    jax_minimum = _minimum("jax")
    assert jax_minimum in MIN_PYTHON_OF_JAX, (
        f"jax minimum {jax_minimum} is new: record the lowest Python it supports in "
        "MIN_PYTHON_OF_JAX, from that release's Requires-Python"
    )
    assert _requires_python_floor() == MIN_PYTHON_OF_JAX[jax_minimum]


def test_python_classifiers_start_at_requires_python():
    floor = _requires_python_floor()
    minors = sorted(
        tuple(int(p) for p in c.rsplit(" :: ", 1)[1].split("."))
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: \d+\.\d+", c)
    )
    assert minors, "no 'Programming Language :: Python :: 3.X' classifiers"
    assert minors[0] == floor
    assert minors == [(3, m) for m in range(minors[0][1], minors[-1][1] + 1)], "gaps in versions"


def test_jax_and_jaxlib_minimums_agree():
    # Each jax release requires the jaxlib of its own version.
    assert _minimum("jax") == _minimum("jaxlib")
    for name in PINNED_MINIMUMS:
        assert Version(_minimum(name)) in _dependency(name).specifier


def test_exact_pins_are_only_in_the_test_extra():
    extras = PROJECT["optional-dependencies"]
    for extra, requirements in extras.items():
        if extra == "test":
            continue
        pinned = [r for r in requirements if any(s.operator == "==" for s in Requirement(r).specifier)]
        assert not pinned, f"extra {extra!r} pins exactly: {pinned}"
    for requirement in PROJECT["dependencies"]:
        assert not any(s.operator == "==" for s in Requirement(requirement).specifier), requirement


def test_test_extra_pins_satisfy_the_docs_extra():
    test = {Requirement(r).name: Requirement(r).specifier for r in PROJECT["optional-dependencies"]["test"]}
    for requirement in map(Requirement, PROJECT["optional-dependencies"]["docs"]):
        assert requirement.name in test, f"the test extra builds the docs but lacks {requirement.name}"
        pins = [s for s in test[requirement.name] if s.operator == "=="]
        assert len(pins) == 1, f"{requirement.name} should be pinned exactly in the test extra"
        assert Version(pins[0].version) in requirement.specifier, requirement


# --- the declared minimums, installed ----------------------------------------

_MINIMUM_CHECK = textwrap.dedent(
    """
    import importlib.metadata
    import json

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    import gradxform as gx

    params = {"dense": {"w": jnp.ones((4, 2)), "b": jnp.zeros(2)}}
    tx = gx.adam(1e-2)

    @jax.jit
    def step(params, state):
        grads = jax.tree.map(jnp.ones_like, params)
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    new_params, _ = step(params, tx.init(params))

    mesh = jax.make_mesh((1,), ("data",))
    placed = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
    shardings = gx.state_shardings(tx, placed, zero_axis="data")
    state = jax.jit(tx.init, out_shardings=shardings)(placed)
    mu_spec = tuple(state[0].mu["dense"]["w"].sharding.spec)

    metadata = importlib.metadata.metadata("gradxform")
    print(json.dumps({
        "jax": jax.__version__,
        "jaxlib": importlib.metadata.version("jaxlib"),
        "numpy": np.__version__,
        "gradxform_file": gx.__file__,
        "version": gx.__version__,
        "license": metadata["License-Expression"],
        "license_files": metadata.get_all("License-File"),
        "requires_python": metadata["Requires-Python"],
        "w": np.asarray(new_params["dense"]["w"]).ravel().tolist(),
        "mu_spec": mu_spec,
    }))
    """
)


def _venv_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python")


@pytest.mark.slow
@pytest.mark.skipif(
    sys.version_info[:2] != _requires_python_floor(),
    reason="the declared minimums are tested together on the lowest supported Python "
    "(the oldest numpy has no wheels for newer Pythons)",
)
def test_declared_minimums_install_and_work(tmp_path):
    minimums = {name: _minimum(name) for name in PINNED_MINIMUMS}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, env=env, timeout=300)
    python = str(_venv_python(env_dir))

    # An editable install writes gradxform.egg-info next to pyproject.toml; install
    # a copy of the source, so the working tree (on the other tests' sys.path) is untouched.
    source = tmp_path / "source"
    shutil.copytree(REPO / "gradxform", source / "gradxform", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)

    # Install gradxform with its declared dependencies, holding jax, jaxlib and
    # numpy at their declared minimums: the resolver fails if pyproject's
    # ranges do not admit them.
    constraints = tmp_path / "minimums.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in minimums.items()))
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--only-binary=:all:", "--constraint", str(constraints), "--editable", str(source)],
        env=env, capture_output=True, text=True, timeout=1800,
    )
    assert install.returncode == 0, install.stdout[-4000:] + install.stderr[-4000:]

    run = subprocess.run(
        [python, "-c", _MINIMUM_CHECK], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])

    assert result["jax"] == minimums["jax"]
    assert Version(result["jaxlib"]) == Version(minimums["jaxlib"])
    assert Version(result["numpy"]) == Version(minimums["numpy"])
    assert Path(result["gradxform_file"]).resolve() == source / "gradxform" / "__init__.py"
    assert result["version"] == PROJECT["version"]
    assert result["license"] == PROJECT["license"]
    assert result["license_files"] == PROJECT["license-files"]
    assert result["requires_python"] == PROJECT["requires-python"]
    # One Adam step of size 1e-2 against gradient 1.
    assert result["w"] == pytest.approx([0.99] * 8, abs=1e-6)
    # ZeRO-1 spreads the (4, 2) first moment over the one-device "data" axis.
    assert result["mu_spec"] == ["data", None]
