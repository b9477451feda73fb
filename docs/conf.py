"""Sphinx configuration: the gradxform documentation site.

Guides (reStructuredText, their code executed by ``tests/test_guides.py``), the
notebooks with their stored outputs (rendered by myst-nb, executed by
``pytest --nbmake``), and the API reference built from the docstrings.

Build it (offline; nothing is fetched) from the repository root with::

    pip install -e ".[docs]"
    python -m sphinx -b html -W --keep-going docs docs/_build/html

Formulas are rendered by MathJax, which the browser loads when a page is viewed.
"""

import inspect
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gradxform  # noqa: E402

project = "gradxform"
author = "gradxform contributors"
copyright = "gradxform contributors"  # noqa: A001
release = version = gradxform.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",
    "sphinx_copybutton",
]

exclude_patterns = ["_build", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".ipynb": "myst-nb"}

# The notebooks are stored with their outputs and executed by the test suite
# (pytest --nbmake); the site shows the stored outputs instead of running them again.
nb_execution_mode = "off"
nb_merge_streams = True
# Copy only the code of a block: no prompts, no printed output.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = False
root_doc = "index"
language = "en"
# The docstrings write `chain`, `ScaleByAdamState`: make those cross-references.
default_role = "py:obj"

# Google-style docstrings: Args:, Returns:, Example: (doctest lines).
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Keep the public aliases in signatures instead of expanding them into long unions.
autodoc_type_aliases = {
    name: f"gradxform.{name}"
    for name in ("Params", "Updates", "OptState", "Schedule", "ScalarOrSchedule")
}
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True

# Sphinx 9.0 prints an alias nested in ``X | None`` or ``Callable[...]`` by its
# repr, ``TypeAliasForwardRef('gradxform.Params')``; print its name instead.
try:
    from sphinx.util.inspect import TypeAliasForwardRef

    TypeAliasForwardRef.__repr__ = lambda self: self.name
except ImportError:  # moved in a later Sphinx: the signatures stay valid, only wordier
    pass

html_theme = "furo"
html_title = f"gradxform {release}"


def _drop_init_return(app, what, name, obj, options, signature, return_annotation):
    """optax's schedule names are classes here; documented as the functions users call,
    their signature is ``__init__``'s, whose ``-> None`` would be wrong."""
    if what == "function" and inspect.isclass(obj):
        return signature, None
    return None


def setup(app):
    app.connect("autodoc-process-signature", _drop_init_return)
