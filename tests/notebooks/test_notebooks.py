"""The tutorial notebooks: committed clean, and each runs top to bottom in a real kernel (KVLAB_QUICK=1).

Execution is nbmake's (its NotebookRun, the engine behind ``pytest --nbmake``) with a real ipykernel; a
cell that raises fails the test with the cell's traceback, and what each notebook must have shown is
checked in its kernel afterwards (nbmake's post_cell_execute). Each kernel gets a marker in its
environment, so after the run we can check that nothing it started (engines, their helpers) is still
alive — without mistaking another test's or another user's processes on the same machine for ours.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = ["01_quickstart", "02_bursty_elastic_vs_static", "03_multi_model_sharing", "04_limits_and_budgets",
            "05_under_the_hood"]
CELL_TIMEOUT = 600
# Run in the notebook's kernel after its last cell: what each notebook must have shown, from its own variables.
CHECKS = {
    "01_quickstart": """
assert first.ok and all(r.ok for r in records), "every request of the quickstart must succeed"
assert peak_mib >= idle_mib + 16, f"the pool did not grow in the bursts: idle {idle_mib} MiB, peak {peak_mib} MiB"
assert after_mib < peak_mib, f"the pool did not shrink after the bursts: {after_mib} MiB vs peak {peak_mib}"
""",
    "02_bursty_elastic_vs_static": """
assert result.ok and summary["errors"].sum() == 0 and (summary["requests"] > 0).all()
assert static["idle MiB"] - elastic["idle MiB"] > 0.5 * kv_bytes / 2**20, "static must hold its KV cache at idle"
assert elastic["KV peak MiB"] > elastic["KV idle MiB"] and elastic["KV after MiB"] < elastic["KV peak MiB"]
""",
    "03_multi_model_sharing": """
assert result.ok and summary["errors"].sum() == 0
assert len(shifts) >= 2 and all(d > o for d, o in zip(driven_peak, other_peak)), shifts
assert together.max() < capacity / 4, "two elastic pools together must hold far less than a static split"
assert [s["requests"] for s in served] == [1, 1] and [s["state"] for s in served] == ["asleep", "awake"], served
assert not any(s["pids"] for s in gw.status()), "the endpoint left engines running"
""",
    "04_limits_and_budgets": """
free, limited, lifted = runs
assert [r["ok"].split("/")[0] for r in runs] == [r["ok"].split("/")[1] for r in runs], runs
assert limited["peak MiB"] <= limited["limit MiB"] < free["peak MiB"], runs
assert lifted["peak MiB"] > limited["limit MiB"] and lifted["limit MiB"] is None, runs
""",
    "05_under_the_hood": """
assert child.returncode == -11, "touching an unmapped page must fault"
assert len(bench["rows"]) == 3 and all(r["map_us_per_page"] > 0 for r in bench["rows"])
assert arena.closed
""",
}


def _path(name: str) -> Path:
    return NOTEBOOKS / f"{name}.ipynb"


def test_the_five_notebooks_are_there():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_without_outputs(name):
    nb = nbformat.read(_path(name), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code cells"
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"{name}: code cell {i} was committed with outputs"
        assert cell.execution_count is None, f"{name}: code cell {i} has execution_count {cell.execution_count}"
    # The first cell installs kvlab on Colab from a placeholder URL, never a made-up real one.
    assert "KVLAB_GIT_URL" in code[0].source and "pip" in code[0].source
    assert nb.cells[1].cell_type == "markdown" and nb.cells[1].source.startswith("# ")
    assert "Summary" in nb.cells[-1].source, f"{name} should end with a short summary"


def _processes_with(marker: str) -> list[int]:
    """PIDs whose environment holds ``marker`` (what the kernel started, and their children)."""
    needle = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


def _errors(nb) -> list[str]:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stderr" and "Traceback" in o.get("text", ""):
                out.append(o["text"][-2000:])  # a background thread's traceback: printed, not raised
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    from nbmake.nb_run import NotebookRun

    marker = f"kvlab-nbtest-{uuid.uuid4().hex}"
    monkeypatch.setenv("KVLAB_QUICK", "1")
    monkeypatch.setenv("KVLAB_NBTEST_MARKER", marker)
    # nbmake runs a copy in tmp_path (its working directory, so results land there), with the checks as
    # nbmake's post_cell_execute of the last code cell: they run in the same kernel, after it.
    nb = nbformat.read(_path(name), as_version=4)
    last_code = [c for c in nb.cells if c.cell_type == "code"][-1]
    last_code.metadata["nbmake"] = {"post_cell_execute": CHECKS[name].strip().splitlines()}
    copy = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, copy)
    t0 = time.monotonic()
    result = NotebookRun(copy, default_timeout=CELL_TIMEOUT).execute()  # a failed check raises here
    elapsed = time.monotonic() - t0
    print(f"{name}: {elapsed:.1f} s")
    assert result.error is None, f"{name} failed in cell {result.error.failing_cell_index}:\n{result.error.trace}"
    assert not _errors(result.nb), f"{name} printed tracebacks:\n" + "\n".join(_errors(result.nb))
    deadline = time.monotonic() + 30
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _processes_with(marker), f"{name} left processes running: {_processes_with(marker)}"
