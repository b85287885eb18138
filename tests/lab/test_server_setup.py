"""Server checks that run before any engine starts: bad model paths, taken ports, memory modes, flags."""

import importlib.util
import socket

import pytest

pytest.importorskip("vllm")

from kvlab.lab import ModelNotFound, PortInUse, Server, UnsupportedSetup  # noqa: E402
from kvlab.lab.engine import engine_env, engine_flags  # noqa: E402


def test_unknown_model_path_fails_before_starting(tmp_path):
    with pytest.raises(ModelNotFound, match="does not exist"):
        Server(tmp_path / "no-such-model", memory="static")
    with pytest.raises(ModelNotFound, match="does not exist"):
        Server("./no/such/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="has no config.json"):
        Server(str(tmp_path / "empty"))


def test_hub_id_not_cached_while_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelNotFound, match="HF_HUB_OFFLINE"):
        Server("nobody/no-such-model-kvlab", start=False)


def test_port_in_use_is_a_clear_error(tiny_model):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port} is already in use"):
            Server(tiny_model, memory="static", port=port)


def test_memory_modes_set_the_engine_environment(tiny_model, monkeypatch):
    monkeypatch.setenv("KVLAB_ELASTIC", "1")  # a stray switch in the shell must not leak into static
    static = Server(tiny_model, memory="static", start=False)
    assert "KVLAB_ELASTIC" not in static.environment()
    monkeypatch.setenv("KVLAB_LIMIT", "1M")  # nor a settings variable into an elastic server's settings
    elastic = Server(tiny_model, memory="elastic", start=False, env={"FOO": "bar", "HOME": None})
    env = elastic.environment()
    assert "KVLAB_ELASTIC" not in env and "KVLAB_LIMIT" not in env and env["FOO"] == "bar" and "HOME" not in env
    assert env["VLLM_HOST_IP"] == "127.0.0.1" and elastic.device == "cpu"
    assert not static.alive and static.pid is None
    static.stop()  # stopping a server that never started is fine


def test_kvcached_needs_gpu_and_package(tiny_model):
    with pytest.raises(UnsupportedSetup, match="kvcached") as e:
        Server(tiny_model, memory="kvcached", start=False)
    # This machine lacks both: the message names each thing that is missing.
    assert "NVIDIA GPU" in str(e.value)
    if importlib.util.find_spec("kvcached") is None:
        assert "pip install kvcached" in str(e.value)
    # On a GPU, kvcached's own switches are what turn it on; the other modes never inherit them.
    env = engine_env("kvcached", "cuda:0", base={"KVLAB_ELASTIC": "1"})
    assert env["ENABLE_KVCACHED"] == "true" and env["KVCACHED_AUTOPATCH"] == "1" and "KVLAB_ELASTIC" not in env
    assert "ENABLE_KVCACHED" not in engine_env("static", "cpu", base={"ENABLE_KVCACHED": "true"})


def test_pool_name_only_for_elastic(tiny_model):
    a = Server(tiny_model, memory="elastic", start=False, name="my model")
    b = Server(tiny_model, memory="elastic", start=False, name="my model")
    assert a.pool_name.startswith("my-model-") and a.pool_name != b.pool_name
    assert a.elastic.pool_name == a.pool_name and "KVLAB_POOL_NAME" not in a.environment()
    assert Server(tiny_model, memory="static", start=False).pool_name is None
    with pytest.raises(ValueError, match="memory must be one of"):
        Server(tiny_model, memory="dynamic", start=False)


def test_engine_args_become_flags(tiny_model):
    assert engine_flags({"max_model_len": 512, "enforce_eager": True, "enable_prefix_caching": False,
                         "served_model_name": ["a", "b"], "seed": None, "hf_overrides": {"x": 1}}) == [
        "--max-model-len", "512", "--enforce-eager", "--no-enable-prefix-caching",
        "--served-model-name", "a", "b", "--hf-overrides", '{"x": 1}']
    s = Server(tiny_model, memory="static", start=False, max_model_len=256)
    cmd = s.command()
    assert cmd[cmd.index("--max-model-len") + 1] == "256"
    assert "--enforce-eager" in cmd and cmd[cmd.index("--dtype") + 1] == "bfloat16"  # CPU defaults
    with pytest.raises(ValueError, match="set by Server itself"):
        engine_flags({"port": 1})
    with pytest.raises(ValueError, match="not a valid option name"):
        engine_flags({"bad key": 1})
    with pytest.raises(ValueError, match="give a str, number"):
        engine_flags({"thing": object()})


def test_elastic_settings_reach_the_engine_as_one_serialized_object(tiny_model):
    import json

    from kvlab.lab import ElasticSettings, ElasticVsStatic, Fleet, InvalidSettings, bursty

    settings = ElasticSettings(limit="2G", reserve="64M", idle_release=30, page_size="2MiB")
    s = Server(tiny_model, memory="elastic", start=False, elastic=settings, additional_config={"other": 1})
    cmd = s.command()
    sent = json.loads(cmd[cmd.index("--additional-config") + 1])
    assert sent["other"] == 1 and ElasticSettings.from_dict(sent["kvlab"]) == s.elastic
    assert s.elastic.limit == 2 << 30 and s.elastic.pool_name == s.pool_name and s.elastic.elastic
    # bad input: a typed error at the call, before anything starts
    with pytest.raises(InvalidSettings, match="KVLAB_RESERVE"):
        ElasticSettings(reserve="-1M")
    with pytest.raises(ValueError, match="elastic=ElasticSettings\\(idle_release=...\\)"):
        Server(tiny_model, memory="elastic", start=False, env={"KVLAB_IDLE_RELEASE": "off"})
    with pytest.raises(ValueError, match="memory='static'"):
        Server(tiny_model, memory="static", start=False, elastic=settings)
    with pytest.raises(ValueError, match="set by Server"):
        Server(tiny_model, start=False, elastic=settings, additional_config={"kvlab": {}})
    fleet = Fleet([tiny_model, tiny_model], start=False, memory="elastic", elastic=ElasticSettings(limit="1G"))
    assert [f.elastic.limit for f in fleet] == [1 << 30] * 2 and fleet[0].pool_name != fleet[1].pool_name
    setups = dict(ElasticVsStatic(tiny_model, bursty(1, 1, pause=0), elastic=settings)._setups())
    assert setups["elastic"][0].elastic.limit == 2 << 30 and setups["static"][0].elastic is None
