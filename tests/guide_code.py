"""Runs the code of one documentation page, as ``tests/test_guides.py`` does.

Every ``.. code-block:: python`` block of the page runs, in order, in one
namespace; a block with the option ``:class: not-run`` (code that needs several
hosts) is only shown. Then every ``>>>`` example of the page runs as a doctest.

Run it on one page while writing it::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/guide_code.py docs/guides/sharding.rst
"""

import doctest
import pathlib
import re
import sys
import textwrap

_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block:: *python3? *$")
_OPTION = re.compile(r"^[ \t]+:(?P<name>[\w-]+):(?P<value>.*)$")


def python_blocks(text):
    """``(line number, options, code)`` of each ``.. code-block:: python`` in ``text``."""
    lines = text.splitlines()
    blocks = []
    for number, line in enumerate(lines):
        directive = _DIRECTIVE.match(line)
        if not directive:
            continue
        indent = len(directive["indent"].expandtabs())
        options, body, index = {}, [], number + 1
        while index < len(lines) and (option := _OPTION.match(lines[index])):
            options[option["name"]] = option["value"].strip()
            index += 1
        for body_line in lines[index:]:
            if body_line.strip() and len(body_line) - len(body_line.lstrip()) <= indent:
                break
            body.append(body_line)
        code = textwrap.dedent("\n".join(body)).strip("\n")
        assert code, f"line {number + 1}: an empty code block"
        blocks.append((number + 1, options, code))
    return blocks


def is_shown_only(options):
    return "not-run" in options.get("class", "").split()


def run_page(path):
    path = pathlib.Path(path)
    text = path.read_text()
    namespace = {"__name__": f"guide:{path.stem}"}
    for line, options, code in python_blocks(text):
        if not is_shown_only(options):
            exec(compile(code, f"{path}, block at line {line}", "exec"), namespace)  # noqa: S102
    failures, _ = doctest.testfile(
        str(path), module_relative=False, report=True, encoding="utf-8",
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    if failures:
        raise SystemExit(f"{path}: {failures} doctest example(s) failed")


if __name__ == "__main__":
    # Run as a script, this folder leads sys.path, and its keras/ would shadow Keras.
    here = pathlib.Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if pathlib.Path(entry or ".").resolve() != here]
    for page in sys.argv[1:]:
        run_page(page)
