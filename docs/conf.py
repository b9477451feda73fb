"""Sphinx configuration: the gradxform API reference, built from the docstrings.

Build it (offline; nothing is fetched) from the repository root with::

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
]

exclude_patterns = ["_build"]
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

html_theme = "alabaster"
html_title = f"gradxform {release}"
html_theme_options = {
    "description": "Composable gradient transformations for JAX",
    "fixed_sidebar": True,
}


def _drop_init_return(app, what, name, obj, options, signature, return_annotation):
    """optax's schedule names are classes here; documented as the functions users call,
    their signature is ``__init__``'s, whose ``-> None`` would be wrong."""
    if what == "function" and inspect.isclass(obj):
        return signature, None
    return None


def setup(app):
    app.connect("autodoc-process-signature", _drop_init_return)
