"""`kvlab top`: --once --json for scripts, and the live view in a real terminal (tmux)."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.cli import test_ctl
from tests.cli.test_ctl import REPO, kvlab

# The same fixtures as test_ctl: a private registry and two pool owners, each its own process.
root, owners = test_ctl.root, test_ctl.owners

MiB = 1 << 20


def test_once_json_reports_both_pools_with_rates_and_devices(owners):
    out = kvlab("top", "--once", "--json", "--interval", "0.2")
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    pools = {p["name"]: p for p in snap["pools"]}
    assert set(pools) == {"alpha", "beta"}
    a = pools["alpha"]
    assert a["pid"] == owners[0].pid and a["device_key"] == "cpu" and a["mapped"] == 256 * MiB
    assert a["pages"].startswith("2" * 64 + "1" * 64 + "0") and len(a["pages"]) == 512
    assert a["map_rate"] == 0 and a["unmap_rate"] == 0     # two samples, nothing mapped in between
    host = snap["devices"]["cpu"]
    assert host["source"] == "meminfo" and 0 < host["used"] < host["total"]


def test_once_text_shows_pools_and_page_map(owners):
    out = kvlab("top", "--once", "--interval", "0.1")
    assert out.returncode == 0, out.stderr
    assert "alpha" in out.stdout and "beta" in out.stdout and "256.00 MiB" in out.stdout
    assert "█" in out.stdout and "▒" in out.stdout and "·" in out.stdout  # used, mapped, unmapped pages


def test_bad_interval():
    out = kvlab("top", "--interval", "0")
    assert out.returncode == 2 and "must be positive" in out.stderr


def _tmux(*args, **kw):
    return subprocess.run(["tmux", "-L", f"kvlab-test-{os.getpid()}", *args], capture_output=True, text=True,
                          timeout=30, **kw)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (make test installs it)")
def test_live_view_in_a_real_terminal(owners, root):
    env = f"KVLAB_REGISTRY_DIR={root} PYTHONPATH={REPO}"
    # tmux hands a detached session COLUMNS=80/LINES=24 when its client has no terminal (measured, 3.3a),
    # and rich believes them over the real 200-column pane.
    cmd = f"env -u COLUMNS -u LINES {env} {sys.executable} -m kvlab.cli.main top --interval 0.2"
    assert _tmux("new-session", "-d", "-s", "top", "-x", "200", "-y", "40", cmd).returncode == 0
    try:
        screen = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            screen = _tmux("capture-pane", "-p", "-t", "top").stdout
            if "alpha" in screen and "beta" in screen:
                break
            time.sleep(0.2)
        width = _tmux("display", "-p", "-t", "top", "#{pane_width}").stdout
        assert "alpha" in screen and "beta" in screen, (width, screen)
        assert "cpu (host)" in screen and "256.00 MiB" in screen
        # It keeps refreshing: a limit set now shows up in the same terminal.
        assert kvlab("ctl", "limit", "alpha", "64MiB").returncode == 0
        deadline = time.monotonic() + 10
        while "64.00 MiB" not in screen and time.monotonic() < deadline:
            time.sleep(0.2)
            screen = _tmux("capture-pane", "-p", "-t", "top").stdout
        assert "64.00 MiB" in screen, screen
        _tmux("send-keys", "-t", "top", "C-c")  # Ctrl-C ends it cleanly, the session with it
        deadline = time.monotonic() + 10
        while _tmux("has-session", "-t", "top").returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _tmux("has-session", "-t", "top").returncode != 0
    finally:
        _tmux("kill-server")


def test_top_and_ctl_never_import_torch_or_vllm(owners):
    # Safe next to running engines: no torch, hence no CUDA context (devices come from NVML alone).
    code = ("import io, sys, contextlib; from kvlab.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main.main(['top', '--once', '--json', '--interval', '0.05']) == 0\n"
            "    assert main.main(['ctl', 'list']) == 0\n"
            "print(sorted(m for m in ('torch', 'vllm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_limit_not_yet_applied_shows_as_pending(root):
    from kvlab import limits
    from kvlab.registry import Publisher

    with Publisher("m", 1 << 30, 2 * MiB, name="slow") as pub:  # an owner that has not caught up yet
        limits.set_limit("slow", "64MiB")
        out = kvlab("top", "--once", "--interval", "0.05")
        assert "none (asked 64.00 MiB, pending)" in out.stdout, out.stdout
        pub.update(limit=96 * MiB, control_ack=pub.control().revision)  # applied, raised to one request
        out = kvlab("top", "--once", "--interval", "0.05")
        assert "96.00 MiB (asked 64.00 MiB)" in out.stdout and "pending" not in out.stdout, out.stdout


def test_a_tensor_parallel_engine_shows_once_with_its_ranks(root):
    from kvlab.registry import Publisher

    with Publisher("m", 1 << 30, 2 * MiB, name="tp2", ranks=2) as pub:
        pub.update(mapped=48 * MiB)
        out = kvlab("top", "--once", "--interval", "0.05")
        assert out.stdout.count("tp2") == 1 and "48.00 MiB = 2x24.00 MiB" in out.stdout, out.stdout
        doc = json.loads(kvlab("top", "--once", "--json", "--interval", "0.05").stdout)
        (pool,) = doc["pools"]
        assert (pool["ranks"], pool["mapped"], pool["rank_mapped"]) == (2, 48 * MiB, [24 * MiB, 24 * MiB])
