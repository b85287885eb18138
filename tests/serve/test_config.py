"""kvlab serve without engines: bad configs name their line; unknown models, tokens, and the LRU choice."""

import importlib.util
import time

import httpx
import pytest

from kvlab.serve import ConfigError, Gateway, parse
from kvlab.serve.router import lru_victim
from kvlab.serve.sleep import ASLEEP, AWAKE

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM (devices resolve through it)")

GOOD = """\
host: 127.0.0.1
port: 0
api_key: secret
models:
  qwen-a:
    model: synthetic:qwen2/tiny
    idle_timeout: 30
    limit: 64MiB
  qwen-b:
    model: synthetic:qwen2/tiny
"""


def test_good_config_parses():
    cfg = parse(GOOD)
    assert list(cfg.models) == ["qwen-a", "qwen-b"]
    assert cfg.models["qwen-a"].limit == 64 << 20 and cfg.models["qwen-b"].idle_timeout == 300


@pytest.mark.parametrize("bad, line, words", [
    (GOOD.replace("idle_timeout: 30", "idle_timeout: soon"), 7, "models.qwen-a.idle_timeout"),
    (GOOD.replace("idle_timeout: 30", "idle_timeout: -1"), 7, "must be positive"),
    (GOOD.replace("limit: 64MiB", "limit: lots"), 8, "models.qwen-a.limit"),
    (GOOD.replace("limit: 64MiB", "limit: 64MiB\n    min: 128MiB"), 5, "below min"),
    (GOOD.replace("idle_timeout: 30", "idle_timout: 30"), 7, "idle_timout"),  # a typo is not ignored
    (GOOD.replace("    model: synthetic:qwen2/tiny\n", "", 1), 5, "models.qwen-a.model"),
    (GOOD.replace("qwen-b:", "qwen-a:"), 9, "given twice"),
    (GOOD.replace("port: 0", "port: [0"), 3, "not valid YAML"),
    (GOOD.replace("host: 127.0.0.1", "host: 0.0.0.0").replace("api_key: secret\n", ""), 1, "set api_key"),
    (GOOD.replace("api_key: secret", "api_key: ${KVLAB_TEST_UNSET_KEY}"), 3, "KVLAB_TEST_UNSET_KEY"),
    (GOOD.replace("    idle_timeout: 30\n", "    sleep: nap\n"), 7, "models.qwen-a.sleep"),
])
def test_bad_config_names_its_line(bad, line, words, tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(bad)
    with pytest.raises(ConfigError) as e:
        Gateway(path, start=False)
    assert str(e.value).startswith(f"{path}:{line}:"), str(e.value)
    assert words in str(e.value)


def test_cli_refuses_a_bad_config_with_its_line(tmp_path, capsys):
    from kvlab.cli.main import main

    path = tmp_path / "serve.yaml"
    path.write_text(GOOD.replace("idle_timeout: 30", "idle_timeout: soon"))
    assert main(["serve", str(path)]) == 2
    assert f"{path}:7:" in capsys.readouterr().err


class _E:
    def __init__(self, name, state, in_flight, last_used):
        self.name, self.state, self.in_flight, self.last_used = name, state, in_flight, last_used


def test_lru_victim_is_the_longest_idle_awake_engine():
    a, b, c, d = _E("a", AWAKE, 0, 5.0), _E("b", AWAKE, 0, 1.0), _E("c", AWAKE, 1, 0.0), _E("d", ASLEEP, 0, 0.0)
    assert lru_victim([a, b, c, d], keep=d) is b      # c is older but busy; d is asleep
    assert lru_victim([a, b, c, d], keep=b) is a
    assert lru_victim([c, d], keep=d) is None         # every awake one is busy: the waker waits


@pytest.fixture(scope="module")
def idle_gateway():
    gw = Gateway(parse(GOOD))
    yield gw
    gw.stop()


def test_unknown_model_is_404_with_the_list(idle_gateway):
    import openai

    client = idle_gateway.client()
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    assert e.value.body["models"] == ["qwen-a", "qwen-b"] and "qwen-a, qwen-b" in e.value.body["message"]
    assert [m.id for m in client.models.list()] == ["qwen-a", "qwen-b"]
    assert all(s["state"] == "asleep" and not s["pids"] for s in idle_gateway.status())  # nothing started


@pytest.mark.parametrize("headers, code", [({}, 401), ({"Authorization": "Bearer wrong"}, 403),
                                           ({"X-API-Key": "wrong"}, 403)])
def test_writes_need_the_token(idle_gateway, headers, code):
    for path, body in [("/kvlab/limit", {"model": "qwen-a", "limit": "32MiB"}), ("/kvlab/wake", {"model": "qwen-a"}),
                       ("/v1/completions", {"model": "qwen-a", "prompt": "x"})]:
        r = httpx.post(idle_gateway.url + path, json=body, headers=headers, timeout=10)
        assert r.status_code == code, (path, r.text)
    assert idle_gateway.router.engines["qwen-a"].limit == 64 << 20 and not idle_gateway.pgids()


def test_limit_of_a_sleeping_model_is_kept_for_its_wake(idle_gateway):
    url, auth = idle_gateway.url, {"Authorization": "Bearer secret"}
    r = httpx.post(f"{url}/kvlab/limit", json={"model": "qwen-a", "limit": "32MiB"}, headers=auth, timeout=10)
    assert r.status_code == 200 and r.json() == {"model": "qwen-a", "limit": 32 << 20, "applied": False}
    bad = httpx.post(f"{url}/kvlab/limit", json={"model": "qwen-a", "limit": "-3"}, headers=auth, timeout=10)
    assert bad.status_code == 400
    assert idle_gateway.router.engines["qwen-a"].limit == 32 << 20


def test_status_and_event_stream_are_readable_without_token(idle_gateway):
    status = httpx.get(f"{idle_gateway.url}/kvlab/pools", timeout=10).json()
    assert [m["model"] for m in status["models"]] == ["qwen-a", "qwen-b"] and status["pools"] == []
    samples = []
    t0 = time.monotonic()
    with httpx.stream("GET", f"{idle_gateway.url}/kvlab/events", params={"interval": 0.1}, timeout=10) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                samples.append(line)
            if len(samples) == 2:
                break
    assert len(samples) == 2 and time.monotonic() - t0 < 5


def test_kvlab_top_reads_the_endpoint_remotely(idle_gateway, capsys):
    import json

    from kvlab.cli.main import main

    assert main(["top", "--url", idle_gateway.url, "--once", "--json", "--interval", "0.1"]) == 0
    snap = json.loads(capsys.readouterr().out)
    assert [m["model"] for m in snap["models"]] == ["qwen-a", "qwen-b"] and "cpu" in snap["devices"]
    assert main(["top", "--url", "http://127.0.0.1:9", "--once"]) == 2
    assert "cannot read" in capsys.readouterr().err
