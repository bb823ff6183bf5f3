"""setup.py lists every package folder: a folder it misses is absent from a non-editable install."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"factoryedge": "sdk", "factoryedge.exporters": "exporters", "factoryedge.runtimes": "runtimes",
           "factoryedge.firmware_config": "firmware-config"}


def _setup_call_keywords() -> dict:
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    return {k.arg: k.value for k in call.keywords}


def test_setup_lists_every_folder_with_an_init():
    kw = _setup_call_keywords()
    listed = set(ast.literal_eval(kw["packages"]))
    assert ast.literal_eval(kw["package_dir"]) == FOLDERS
    on_disk = set()
    for name, folder in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            on_disk.add(".".join([name, *rel.parts]))
    assert on_disk - listed == set(), "packages missing from setup.py"
    assert listed - on_disk == set(), "setup.py lists packages that do not exist"
