"""The views' front ends: ES modules and CSS in the repository's top-level ``widgets/``.

A wheel carries them as ``kvlab/widgets/`` (pyproject.toml: ``wheel.force-include``); a source checkout
(an editable install, or running from the tree) has them beside ``kvlab/``. anywidget loads a module from
a blob URL, where a relative import cannot resolve, so ``esm()`` inlines the shared modules a view
imports (``import { ... } from "./frames.js";``); a browser loading a view from a real URL (tests/ui)
imports them itself.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]
_IMPORT = re.compile(r'^import \{[^}]*\} from "\./([\w.-]+\.js)";[ \t]*$', re.MULTILINE)


@cache
def widgets_dir() -> Path:
    for where in (_PACKAGE / "widgets", _PACKAGE.parent / "widgets"):  # installed wheel, then source tree
        if (where / "views.css").is_file():
            return where
    raise FileNotFoundError(f"kvlab's widget front ends are missing: neither {_PACKAGE / 'widgets'} nor "
                            f"{_PACKAGE.parent / 'widgets'} exists; reinstall kvlab")


def esm(name: str) -> str:
    """The view module ``name`` with the shared modules it imports inlined, ready for anywidget's ``_esm``."""
    d = widgets_dir()
    return _IMPORT.sub(lambda m: (d / m.group(1)).read_text(), (d / name).read_text())


def css() -> Path:
    return widgets_dir() / "views.css"
