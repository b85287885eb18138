"""The lab sits below the views: it imports, and its experiments run their bookkeeping, without the widget stack."""

import ast
import subprocess
import sys
from pathlib import Path

LAB = Path(__file__).resolve().parents[2] / "kvlab" / "lab"

BLOCKED = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ipywidgets", "anywidget", "traitlets", "IPython"):
            raise ImportError(f"{name} is blocked: the lab must not need it")
sys.meta_path.insert(0, Blocked())
import pkgutil, importlib, kvlab.lab
for m in pkgutil.iter_modules(kvlab.lab.__path__):
    importlib.import_module("kvlab.lab." + m.name)
import kvlab.lab.experiments, kvlab.limits, kvlab.settings
from kvlab.lab import ElasticVsStatic, Fleet, Server
print(sorted(m for m in sys.modules if m.split(".")[0] in ("ipywidgets", "anywidget") or m.startswith("kvlab.views")))
"""


def test_the_lab_imports_with_the_widget_stack_blocked():
    out = subprocess.run([sys.executable, "-c", BLOCKED], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _imports(paths, package: str) -> list[str]:
    """Each absolute import of ``package`` (or a module under it) in ``paths``, as "file: module"."""
    found = []
    for path in sorted(paths):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            found += [f"{path.name}: {n}" for n in names if n == package or n.startswith(package + ".")]
    return found


def test_no_lab_module_imports_the_views():
    assert _imports(LAB.glob("*.py"), "kvlab.views") == []


def test_only_the_command_line_imports_the_command_line():
    """`kvlab top`'s sampler lives in kvlab.pools, so kvlab serve (and anything else) need not import a CLI."""
    package = LAB.parent
    modules = [p for p in package.rglob("*.py") if "cli" not in p.relative_to(package).parts]
    assert len(modules) > 50
    assert _imports(modules, "kvlab.cli") == []
