"""A real JupyterLab server and headless Chromium (Debian's, driven by Playwright) for notebook tests.

Facts this follows (measured, see the project's jupyter-testing notes): start the ``jupyter-lab``
script itself (the ``jupyter lab`` dispatcher forks, and stopping it leaves the server running);
no token, no XSRF, no news; windowing off so every cell stays in the DOM; autosave off; settings,
workspaces and runtime files in a temp dir; ``expose_app_in_browser`` so the test can ask the app
whether the kernel is connected and idle (the toolbar says "idle" before a kernel exists).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.chromium import browser  # noqa: F401  (the shared Chromium fixture)

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("KVLAB_TEST_ARTIFACTS", ROOT / "test-artifacts"))

# User settings (plugin id -> values), written as <settings dir>/<package>/<plugin>.jupyterlab-settings.
SETTINGS = {
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False,
                                                    "doNotDisturbMode": True},
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(root: Path) -> None:
    for plugin, values in SETTINGS.items():
        package, _, name = plugin.partition(":")
        path = root / package / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


class Lab:
    """A running JupyterLab serving ``root``; ``url(path)`` opens a file in it."""

    def __init__(self, root: Path, home: Path):
        script = Path(sys.executable).parent / "jupyter-lab"
        if not script.exists():
            pytest.skip(f"JupyterLab is not installed ({script} missing): pip install 'kvlab[test]'")
        self.root, self.port = root, _free_port()
        for d in ("settings", "workspaces", "runtime", "config", "data"):
            (home / d).mkdir(parents=True, exist_ok=True)
        _write_settings(home / "settings")
        env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
               "JUPYTER_CONFIG_DIR": str(home / "config"), "PYTHONUNBUFFERED": "1"}
        args = [str(script), f"--port={self.port}", "--ip=127.0.0.1", "--no-browser", "--IdentityProvider.token=",
                "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True", "--LabApp.news_url=None",
                "--LabApp.extension_manager=readonly", "--LabApp.expose_app_in_browser=True",
                f"--ServerApp.root_dir={root}"]
        if os.geteuid() == 0:
            args.append("--allow-root")
        self.log_path = home / "jupyterlab.log"
        self._log = open(self.log_path, "w")
        # Its own session: at teardown the whole group (server and kernels) is stopped together.
        self.proc = subprocess.Popen(args, cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._wait_ready(60)

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter-lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/api/status", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"jupyter-lab did not answer in {timeout} s:\n{self.log_tail()}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/lab/tree/{path}?reset"

    def log_tail(self, n: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        """SIGTERM shuts kernels down cleanly (a kernel's atexit stops its engines); then the group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)
        self._log.close()


@pytest.fixture
def lab(tmp_path):
    root = tmp_path / "notebooks"
    root.mkdir()
    server = Lab(root, tmp_path / "jupyter")
    yield server
    server.stop()


@pytest.fixture
def artifacts(request) -> Path:
    d = ARTIFACTS / request.node.name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d
