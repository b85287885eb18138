"""Server(engine="sglang"): what is refused before any process starts, with which reason."""

import importlib.util

import pytest

from kvlab.lab import Server, UnsupportedSetup, running
from kvlab.lab.sglang_engine import command

HAVE_SGLANG = importlib.util.find_spec("sglang") is not None


@pytest.fixture
def model_dir(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


def test_unknown_engine_and_memory_are_refused(model_dir):
    with pytest.raises(ValueError, match="engine must be one of"):
        Server(model_dir, engine="tgi", start=False)
    with pytest.raises(ValueError, match="memory must be one of"):
        Server(model_dir, engine="sglang", memory="lazy", start=False)
    assert running() == []


@pytest.mark.skipif(HAVE_SGLANG, reason="sglang is installed here")
def test_missing_sglang_is_a_clear_error(model_dir):
    with pytest.raises(UnsupportedSetup, match="pip install 'sglang==0.5.23'"):
        Server(model_dir, engine="sglang", start=False)
    assert running() == []


@pytest.mark.skipif(not HAVE_SGLANG, reason="needs sglang installed (make test-sglang)")
def test_sglang_on_the_cpu_runs_its_cpu_backend(model_dir):
    s = Server(model_dir, engine="sglang", device="cpu", start=False, context_length=512)
    assert s.command(9) == [*s.command(9)[:2], "sglang.launch_server", "--model-path", str(model_dir), "--host",
                            "127.0.0.1", "--port", "9", "--device", "cpu", "--context-length", "512"]
    assert s.environment()["KVLAB_ELASTIC"] == "1" and s.pool_name
    with pytest.raises(ValueError, match="device must be"):
        Server(model_dir, engine="sglang", device="tpu", start=False)


def test_the_command_is_sglangs_launch_server():
    cmd = command("/py", "/m", "127.0.0.1", 8000, "cuda:1", ["--context-length", "512"])
    assert cmd == ["/py", "-m", "sglang.launch_server", "--model-path", "/m", "--host", "127.0.0.1", "--port", "8000",
                   "--context-length", "512"]
