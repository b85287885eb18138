"""What the JupyterLab tests share: a notebook from cells, opening one and running it all, waiting on the page."""

from __future__ import annotations

import time

# Evaluated in the page: the notebook panel through the app object (expose_app_in_browser).
JS_KERNEL = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return k ? {status: k.status, connection: k.connectionStatus} : null;
}"""
JS_CELLS = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  return w.content.widgets.filter((c) => c.model.type === "code").map((c) => ({
    count: c.model.executionCount,
    errors: c.model.outputs.toJSON().filter((o) => o.output_type === "error").map((o) => `${o.ename}: ${o.evalue}`),
  }));
}"""


def notebook(cells: list[str]) -> dict:
    """An nbformat 4 notebook of code cells, without outputs."""
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [{"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None,
                   "id": f"c{i}"} for i, c in enumerate(cells)]}


def wait(page, js, cond, timeout, what):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = page.evaluate(js)
        if cond(value):
            return value
        page.wait_for_timeout(250)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {value}")


def open_and_run_all(page, lab, name: str) -> None:
    """Open ``name``, wait for its kernel (connected and idle, not the toolbar's early "idle"), Run All."""
    page.goto(lab.url(name))
    wait(page, JS_KERNEL, lambda k: k and k["connection"] == "connected" and k["status"] == "idle", 90,
         "the notebook's kernel")
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
