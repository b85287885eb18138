"""Headless Chromium for the ES module unit tests.

Playwright drives Debian's chromium (its own browser download does not work here). Pages load from
a made-up origin, http://kvlab.test/, answered by a route handler from the files on disk: module
scripts cannot be imported from file:// pages, and no network is touched.
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path

import pytest

from tests.chromium import browser  # noqa: F401  (the shared Chromium fixture)

ROOT = Path(__file__).resolve().parents[2]
FILES = {"widgets": ROOT / "widgets", "ui": Path(__file__).resolve().parent}
ORIGIN = "http://kvlab.test"


def _serve(route):
    path = route.request.url[len(ORIGIN):].split("?")[0].lstrip("/")
    if path in ("", "index.html"):
        return route.fulfill(body="<!doctype html><meta charset=utf-8><body></body>", content_type="text/html")
    head, _, rest = path.partition("/")
    file = FILES.get(head, Path("/nonexistent")) / rest
    if not file.is_file():
        return route.fulfill(status=404, body=f"no {path}")
    route.fulfill(body=file.read_bytes(), content_type=mimetypes.guess_type(file.name)[0] or "text/javascript")


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 900, "height": 700}, device_scale_factor=1)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.route(f"{ORIGIN}/**", _serve)
    pg.goto(f"{ORIGIN}/index.html")
    yield pg
    ctx.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def js_state(state: dict) -> dict:
    """A captured widget state made JSON-safe: bytes become {"__b64__": ...}, decoded by fake_model.js."""
    def enc(v):
        if isinstance(v, (bytes, bytearray, memoryview)):
            return {"__b64__": base64.b64encode(bytes(v)).decode()}
        if isinstance(v, dict):
            return {k: enc(x) for k, x in v.items()}
        if isinstance(v, list):
            return [enc(x) for x in v]
        return v
    return {k: enc(v) for k, v in state.items() if not k.startswith("_") and k not in ("layout", "tabbable", "tooltip")}


@pytest.fixture
def widget_state():
    """widget_state(widget) -> its state as the front end would receive it, ready for FakeModel."""
    pytest.importorskip("anywidget")

    def get(widget):
        widget.flush()  # the latest Python-side state into the traits, as the views thread would
        return js_state(widget.get_state())
    return get
