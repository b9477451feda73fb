"""The public API: flat, documented, and layered as DESIGN.md says."""

import ast
import inspect
import pathlib

import pytest

import gradxform as gx

PACKAGE = pathlib.Path(gx.__file__).parent
NAMESPACES = {
    "gx": gx, "gx.keras": gx.keras, "gx.schedules": gx.schedules, "gx.sparse": gx.sparse,
    "gx.torch": gx.torch,
}
PUBLIC = {
    f"{prefix}.{name}": getattr(namespace, name)
    for prefix, namespace in NAMESPACES.items()
    for name in namespace.__all__
    if inspect.isfunction(getattr(namespace, name)) or inspect.isclass(getattr(namespace, name))
}
# Types (states, the transformation itself) document their fields, not a formula.
DOCUMENTED = sorted(
    name for name, obj in PUBLIC.items()
    if inspect.isfunction(obj) or callable(getattr(obj, "__call__", None)) and hasattr(obj, "__dataclass_fields__")
)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_public_function_documents_formula_arguments_and_example(name):
    obj = PUBLIC[name]
    doc = inspect.getdoc(obj)
    assert doc, name
    assert ".. math::" in doc, f"{name}: no formula"
    assert ">>>" in doc and "Example" in doc, f"{name}: no example"
    parameters = inspect.signature(obj).parameters
    if parameters:
        assert "Args:" in doc, f"{name}: arguments undocumented"
        for parameter in parameters.values():
            if parameter.kind is parameter.VAR_KEYWORD:
                continue
            assert f"{parameter.name.lstrip('*')}" in doc.split("Args:")[1], (
                f"{name}: argument {parameter.name} undocumented"
            )


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


@pytest.mark.parametrize(
    "layer,allowed",
    [
        ("core", ("gradxform.core",)),
        ("transforms", ("gradxform.core",)),
        ("schedules", ("gradxform.core", "gradxform.schedules")),
        ("optimizers", (
            "gradxform.core", "gradxform.transforms", "gradxform.schedules", "gradxform.optimizers",
        )),
        ("keras", ("gradxform.core", "gradxform.transforms", "gradxform.schedules", "gradxform.keras")),
        ("sparse", ("gradxform.core", "gradxform.sparse")),
        ("torch", ("gradxform.core", "gradxform.transforms", "gradxform.schedules", "gradxform.torch")),
    ],
)
def test_layers_import_only_downward(layer, allowed):
    for path in (PACKAGE / layer).rglob("*.py"):
        for module in _imports(path):
            if module.startswith("gradxform"):
                assert module.startswith(allowed), f"{path.name} imports {module}"


def test_modules_stay_small():
    for path in PACKAGE.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path


def test_runtime_needs_no_optax():
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("demo.py",):
            continue
        top_level = [
            node for node in ast.parse(path.read_text()).body
            if isinstance(node, (ast.Import, ast.ImportFrom))
        ]
        for node in top_level:
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            assert not any(n and n.split(".")[0] in ("optax", "flax", "keras", "torch")
                           for n in names), path


def test_all_lists_exactly_what_init_imports():
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    imported = {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == set(gx.__all__), (imported ^ set(gx.__all__))
