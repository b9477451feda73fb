"""The documentation site in docs/: it lists every public name, and Sphinx builds it without a warning.

Each name of ``gx.__all__`` and of ``gx.schedules``, ``gx.keras``, ``gx.sparse`` and ``gx.torch``
has its own ``auto*`` (or ``py:``) directive in docs/**/*.rst, so a new public
name without documentation fails here, as does a directive for a name that is
no longer public.
"""

import html
import importlib
import inspect
import pathlib
import re
import subprocess
import sys

import gradxform as gx

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NAMESPACES = (gx, gx.schedules, gx.keras, gx.sparse, gx.torch)

_DIRECTIVE = re.compile(
    r"^\s*\.\. (?:auto|py:)?(module|currentmodule|function|class|data|exception|attribute)::\s*(\S+)",
    re.M,
)


def _public_names():
    """Fully qualified public names: ``gradxform.adam``, ``gradxform.keras.adam``, ..."""
    return {f"{namespace.__name__}.{name}" for namespace in NAMESPACES for name in namespace.__all__}


def _documented_names():
    """Fully qualified names the rst sources document, in the module each page sets."""
    documented = []
    for path in sorted(DOCS.rglob("*.rst")):
        module = None
        for kind, name in _DIRECTIVE.findall(path.read_text()):
            if kind in ("module", "currentmodule"):
                module = name
                if kind == "module":
                    documented.append((path, name))
            else:
                full = name if name.startswith("gradxform.") or module is None else f"{module}.{name}"
                documented.append((path, full))
    return documented


def _resolves(full_name):
    module_name, _, attribute = full_name.rpartition(".")
    try:
        return hasattr(importlib.import_module(module_name), attribute)
    except ImportError:
        return False


def test_every_public_name_is_documented():
    documented = {name for _, name in _documented_names()}
    missing = sorted(_public_names() - documented)
    assert not missing, f"public names without a directive in docs/: {missing}"


def test_every_documented_name_is_public():
    stale = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path, name in _documented_names()
        if name not in _public_names() or not _resolves(name)
    )
    assert not stale, f"directives for names that are not public (any more): {stale}"


def test_no_name_is_documented_twice():
    names = [name for _, name in _documented_names()]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def _rendered_signatures(text):
    """``prefix.name`` of every object signature Sphinx rendered in a page."""
    pattern = re.compile(
        r'<span class="sig-prename descclassname"><span class="pre">([^<]*)</span></span>'
        r'<span class="sig-name descname"><span class="pre">([^<]*)</span>'
    )
    return {html.unescape(prefix + name) for prefix, name in pattern.findall(text)}


def test_sphinx_builds_the_reference_without_warnings(tmp_path):
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr or result.stdout
    assert not result.stderr.strip(), result.stderr

    pages = {path.relative_to(out).as_posix(): path.read_text() for path in out.rglob("*.html")}
    rendered = set().union(*map(_rendered_signatures, pages.values()))
    modules = {
        f"{namespace.__name__}.{name}"
        for namespace in NAMESPACES
        for name in namespace.__all__
        if inspect.ismodule(getattr(namespace, name))
    }
    for module in modules:
        assert any(f'id="module-{module}"' in text for text in pages.values()), module
    missing = sorted(_public_names() - modules - rendered)
    assert not missing, f"documented but not rendered: {missing}"

    # Docstrings arrive whole: summary, the formula as display math, arguments, example.
    optimizers = pages["api/optimizers.html"]
    assert 'id="gradxform.adam"' in optimizers
    assert r"\frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}" in optimizers
    assert "learning_rate" in optimizers and "&gt;&gt;&gt;" in optimizers
    schedules = pages["api/schedules.html"]
    assert 'id="gradxform.schedules.warmup_cosine_decay_schedule"' in schedules
    assert r"\cos" in schedules
    assert 'id="gradxform.keras.adam"' in pages["api/keras.html"]
    # Every guide and every notebook is a page of the site; a notebook's stored plots are shown.
    for guide in (DOCS / "guides").glob("*.rst"):
        assert f"guides/{guide.stem}.html" in pages, guide.name
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        page = pages[f"notebooks/{notebook.stem}.html"]
        plots = notebook.read_text().count('"image/png"')
        assert page.count('src="../_images/') >= plots, notebook.name
    assert "copybutton.js" in pages["index.html"] and "furo" in pages["index.html"]
    # Type aliases are kept by name and link to their entry.
    assert 'href="core.html#gradxform.ScalarOrSchedule"' in optimizers
    assert "TypeAliasForwardRef" not in "".join(pages.values())
