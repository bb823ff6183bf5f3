"""Dependency direction, read from the source: exporters -> sdk <- runtimes, and only the CLI sees both.

Every ``.py`` file under ``sdk/``, ``exporters/`` and ``runtimes/`` is parsed (nothing is
imported) and every import in it is collected: module-level and inside functions, ``import x``,
``from x import y`` (which counts as importing ``x`` and ``x.y``, so ``from factoryedge import
runtimes`` is seen) and relative imports, resolved against the file's package. Imports by
string (``importlib.import_module``) are not seen; the CLI's command table uses them, and the
CLI may import anything.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"sdk": "factoryedge", "exporters": "factoryedge.exporters", "runtimes": "factoryedge.runtimes"}
RULE = "exporters -> sdk <- runtimes; only factoryedge.cli, the composition root, sees both"
RUNTIMES, EXPORTERS, CLI = "factoryedge.runtimes", "factoryedge.exporters", "factoryedge.cli"

# folder (or file) -> the modules code there must not import; the longest matching prefix applies.
FORBIDDEN = {
    "runtimes/": (EXPORTERS, "factoryedge.training", "factoryedge.evaluation", CLI, "torch"),
    "exporters/": (RUNTIMES, CLI),
    "sdk/": (RUNTIMES, EXPORTERS, CLI),
    "sdk/cli/": (),
    # ``python -m factoryedge`` only hands over to the composition root.
    "sdk/__main__.py": (RUNTIMES, EXPORTERS),
}


@dataclass(frozen=True)
class Import:
    path: str  # relative to the repository root, e.g. "runtimes/app.py"
    line: int
    statement: str
    modules: tuple[str, ...]  # every module name the statement imports, fully qualified


def module_of(path: str) -> tuple[str, bool]:
    """The dotted module a repository path installs as, and whether it is a package's __init__."""
    folder, *rest = Path(path).with_suffix("").parts
    is_package = rest[-1:] == ["__init__"]
    parts = rest[:-1] if is_package else rest
    return ".".join([FOLDERS[folder], *parts]), is_package


def imports_in(source: str, path: str) -> list[Import]:
    """Every import statement in ``source`` (the text of the file at ``path``), anywhere in it."""
    module, is_package = module_of(path)
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            names = tuple(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = (base, *(f"{base}.{a.name}" for a in node.names if a.name != "*"))
        else:
            continue
        found.append(Import(path, node.lineno, ast.unparse(node), names))
    return found


def _imports(imp: Import, target: str) -> bool:
    return any(m == target or m.startswith(target + ".") for m in imp.modules)


def _forbidden(path: str) -> tuple[str, ...]:
    key = max((k for k in FORBIDDEN if path == k or (k.endswith("/") and path.startswith(k))), key=len)
    return FORBIDDEN[key]


def violations(imports: list[Import], rules: tuple[str, ...] | None = None) -> list[str]:
    """One message per import that breaks its folder's rule: file, line, statement, why.

    ``rules`` narrows the check to imports of those modules (for one test per rule).
    """
    out = []
    for imp in imports:
        for target in _forbidden(imp.path):
            if (rules is None or target in rules) and _imports(imp, target):
                folder = imp.path.split("/")[0]
                out.append(f"{imp.path}:{imp.line}: `{imp.statement}` imports {target}, which {folder}/ code "
                           f"must not import (rule: {RULE})")
    return out


def source_files() -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def all_imports() -> list[Import]:
    return [imp for path in source_files() for imp in imports_in((ROOT / path).read_text(encoding="utf-8"), path)]


def _fail_on(messages: list[str]) -> None:
    if messages:
        pytest.fail(f"{len(messages)} import(s) against the dependency direction:\n" + "\n".join(messages), pytrace=False)


# -- the rules --------------------------------------------------------------------------

def test_runtimes_import_no_exporters_training_evaluation_cli_or_torch():
    _fail_on([v for v in violations(all_imports()) if v.startswith("runtimes/")])


def test_exporters_import_no_runtimes_or_cli():
    _fail_on([v for v in violations(all_imports()) if v.startswith("exporters/")])


def test_sdk_outside_the_cli_imports_no_runtimes_exporters_or_cli():
    _fail_on([v for v in violations(all_imports()) if v.startswith("sdk/")])


def test_only_the_cli_imports_both_runtimes_and_exporters():
    by_file: dict[str, set[str]] = {}
    for imp in all_imports():
        for target in (RUNTIMES, EXPORTERS):
            if _imports(imp, target):
                by_file.setdefault(imp.path, set()).add(target)
    both = sorted(p for p, seen in by_file.items() if len(seen) == 2 and not p.startswith("sdk/cli/"))
    _fail_on([f"{p} imports both {RUNTIMES} and {EXPORTERS}; only factoryedge.cli may (rule: {RULE})" for p in both])


# -- the checker itself -----------------------------------------------------------------

def test_checker_fails_when_a_runtimes_file_imports_exporters():
    source = "import numpy as np\n\n\ndef f():\n    from factoryedge.exporters.onnx_export import export_onnx\n"
    (message,) = violations(imports_in(source, "runtimes/backends/fake.py"))
    assert message.startswith("runtimes/backends/fake.py:5: `from factoryedge.exporters.onnx_export import export_onnx`")
    assert "imports factoryedge.exporters" in message and RULE in message


def test_checker_sees_every_form_of_import():
    source = "\n".join([
        "import torch.nn as nn",
        "from factoryedge import exporters",
        "from ... import training",
        "from ...exporters.image_bundle import build_image_bundle",
        "from . import onnxruntime",
    ])
    found = imports_in(source, "runtimes/backends/select.py")
    assert [v.split(": `")[0] for v in violations(found)] == [
        "runtimes/backends/select.py:1", "runtimes/backends/select.py:2",
        "runtimes/backends/select.py:3", "runtimes/backends/select.py:4",
    ]
    assert found[2].modules == ("factoryedge", "factoryedge.training")
    assert found[4].modules == ("factoryedge.runtimes.backends", "factoryedge.runtimes.backends.onnxruntime")
    assert module_of("sdk/__init__.py") == ("factoryedge", True)
    assert module_of("sdk/cli/show.py") == ("factoryedge.cli.show", False)


def test_the_cli_may_import_anything_and_the_rule_reads_the_real_tree():
    source = "from factoryedge.runtimes.backends.select import open_backend\nfrom factoryedge.exporters import onnx_export\n"
    assert violations(imports_in(source, "sdk/cli/fake.py")) == []
    files = source_files()
    assert "runtimes/backends/select.py" in files and "exporters/onnx_export.py" in files and len(files) > 50
