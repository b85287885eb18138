"""`kvlab ctl`, run as a user runs it, against pools owned by other real processes."""

import json
import os
import signal
import subprocess
import sys

import pytest

from kvlab import registry

MiB, GiB = 1 << 20, 1 << 30
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def root(tmp_path, monkeypatch):
    path = f"/dev/shm/kvlab-test-ctl-{os.getpid()}-{tmp_path.name}"[:100]
    monkeypatch.setattr(registry.store, "_default_root", None)
    monkeypatch.setenv("KVLAB_REGISTRY_DIR", path)
    yield path
    left = os.listdir(path) if os.path.isdir(path) else []
    for entry in left:
        os.unlink(os.path.join(path, entry))
    if os.path.isdir(path):
        os.rmdir(path)
    assert not left, f"records left behind: {left}"


@pytest.fixture
def owners(root):
    """Two pool owners, each its own process (tests/limits/pool_process.py)."""
    procs = []
    for name, model in (("alpha", "org/model-a"), ("beta", "org/model-b")):
        p = subprocess.Popen([sys.executable, "-m", "tests.limits.pool_process", name, model], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        procs.append(p)
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        p.wait(10)


def kvlab(*args):
    return subprocess.run([sys.executable, "-m", "kvlab.cli.main", *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO)


def test_list_shows_both_processes_pools(owners):
    out = kvlab("ctl", "list", "--json")
    assert out.returncode == 0, out.stderr
    pools = {p["name"]: p for p in json.loads(out.stdout)}
    assert set(pools) == {"alpha", "beta"}
    assert pools["alpha"]["pid"] == owners[0].pid and pools["beta"]["model"] == "org/model-b"
    assert pools["alpha"]["mapped"] == 256 * MiB and pools["alpha"]["limit"] is None
    text = kvlab("ctl", "list")
    assert text.returncode == 0 and "alpha" in text.stdout and "256.00 MiB" in text.stdout


def test_limit_min_unlimit_from_a_third_process(owners):
    out = kvlab("ctl", "limit", "alpha", "64MiB")
    assert out.returncode == 0, out.stderr
    assert "alpha: limit 64.00 MiB (enforced 64.00 MiB)" in out.stdout and "mapped 64.00 MiB" in out.stdout
    assert registry.read("alpha").mapped == 64 * MiB and registry.read("beta").mapped == 256 * MiB
    assert kvlab("ctl", "limit", "org/model-b", "10%").returncode == 0   # by model, a share of capacity
    assert registry.read("beta").control.limit == GiB // 10
    assert kvlab("ctl", "min", "alpha", "32MiB").returncode == 0
    assert kvlab("ctl", "unlimit", "alpha").returncode == 0
    rec = registry.read("alpha")
    assert rec.limit is None and rec.mapped == 256 * MiB and rec.control.min == 32 * MiB
    watch = kvlab("ctl", "watch", "--interval", "0.1", "--count", "2")
    assert watch.returncode == 0 and watch.stdout.count("2 pool(s)") == 2


@pytest.mark.parametrize("args,words", [
    (("limit", "nope", "1G"), "no live pool or model named 'nope'"),
    (("limit", "alpha", "lots"), "cannot read 'lots'"),
    (("limit", "alpha", "-1G"), "negative"),
    (("limit", "alpha", "150%"), "more than 100%"),
    (("min", "alpha", "2G"), "exceeds its capacity"),
    (("limit", "alpha", "16MiB"), "below its minimum guarantee"),
    (("unlimit", "model-"), "no live pool or model"),
])
def test_bad_input_exits_nonzero_and_changes_nothing(owners, args, words):
    assert kvlab("ctl", "min", "alpha", "32MiB").returncode == 0
    before = [registry.read(n).control for n in ("alpha", "beta")]
    out = kvlab("ctl", *args)
    assert out.returncode == 2 and words in out.stderr, (out.returncode, out.stderr)
    assert out.stderr.startswith("kvlab ctl: ") and "Traceback" not in out.stderr
    assert [registry.read(n).control for n in ("alpha", "beta")] == before


def test_a_killed_owners_record_is_reaped(owners, root):
    owners[0].send_signal(signal.SIGKILL)
    owners[0].wait(10)
    assert os.path.exists(os.path.join(root, "alpha.kvr"))  # the file outlives its process...
    out = kvlab("ctl", "list", "--json")
    assert [p["name"] for p in json.loads(out.stdout)] == ["beta"]
    assert not os.path.exists(os.path.join(root, "alpha.kvr"))  # ...until a reader reaps it
    gone = kvlab("ctl", "limit", "alpha", "1G")
    assert gone.returncode == 2 and "no live pool" in gone.stderr
