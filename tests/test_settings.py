"""kvlab.settings.ElasticSettings: validated once where it is given, the same from Python, the environment
and the serialized form an engine's processes receive."""

import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest

from kvlab.registry import InvalidName, LimitBelowMinimum
from kvlab.settings import ElasticSettings, InvalidSettings

MiB, GiB = 1 << 20, 1 << 30


def test_python_strings_and_the_environment_give_the_same_settings():
    s = ElasticSettings(limit="2G", reserve="64M", idle_release=30, page_size="2MiB", min="1G", headroom=" 10% ")
    assert (s.limit, s.reserve, s.idle_release, s.page_size, s.min, s.headroom) == (2 * GiB, 64 * MiB, 30.0,
                                                                                       2 * MiB, GiB, "10%")
    env = {"KVLAB_ELASTIC": "1", "KVLAB_LIMIT": "2G", "KVLAB_RESERVE": "64M", "KVLAB_IDLE_RELEASE": "30",
           "KVLAB_PAGE_SIZE": "2MiB", "KVLAB_MIN": "1G", "KVLAB_HEADROOM": "10%", "KVLAB_RELEASE_DELAY": ""}
    assert ElasticSettings.from_env(env) == s
    assert not ElasticSettings.from_env({}).elastic and ElasticSettings().elastic
    # what travels in additional_config round-trips, strings or not
    assert ElasticSettings.from_dict(s.to_dict()) == s
    assert ElasticSettings.from_dict({"limit": "64MiB", "release_delay": "0.5"}) == ElasticSettings(limit=64 * MiB,
                                                                                                 release_delay=0.5)


def test_handle_size_defaults_to_one_handle_per_page_and_round_trips():
    assert ElasticSettings(page_size="64KiB").handle_bytes == 64 << 10
    s = ElasticSettings(page_size="64KiB", handle_size="512KiB")
    assert (s.handle_size, s.handle_bytes) == (512 << 10, 512 << 10)
    assert ElasticSettings.from_env({**s.to_env(), "KVLAB_ELASTIC": "1"}) == s == ElasticSettings.from_dict(s.to_dict())
    assert ElasticSettings.from_env({"KVLAB_PAGE_SIZE": "64KiB", "KVLAB_HANDLE_SIZE": "512KiB"}).handle_size == 512 << 10


@pytest.mark.parametrize("never", ["off", "never", " Never ", None])
def test_idle_release_off_keeps_the_reserve(never):
    assert ElasticSettings(idle_release=never).idle_release is None
    assert ElasticSettings.from_dict(ElasticSettings(idle_release=never).to_dict()).idle_release is None
    if never is not None:
        assert ElasticSettings.from_env({"KVLAB_IDLE_RELEASE": never}).idle_release is None


@pytest.mark.parametrize("field, bad, words", [
    ("limit", "-1G", "limit (KVLAB_LIMIT)"), ("limit", 0, "must be positive"), ("reserve", "lots", "KVLAB_RESERVE"),
    ("page_size", 0, "page_size (KVLAB_PAGE_SIZE) must be positive"), ("min", 1.5, "KVLAB_MIN"),
    ("idle_release", "soon", "KVLAB_IDLE_RELEASE"), ("idle_release", True, "KVLAB_IDLE_RELEASE"),
    ("idle_release", float("inf"), "KVLAB_IDLE_RELEASE"), ("idle_release", -0.5, "KVLAB_IDLE_RELEASE"),
    ("release_delay", "nan", "KVLAB_RELEASE_DELAY"), ("headroom", "150%", "KVLAB_HEADROOM"),
    ("elastic", "maybe", "not a boolean"), ("handle_size", "3MiB", "handle_size (KVLAB_HANDLE_SIZE)=3145728 must be"),
    ("handle_size", "1x", "KVLAB_HANDLE_SIZE"),
])
def test_bad_values_raise_a_typed_error_naming_the_setting(field, bad, words):
    with pytest.raises(InvalidSettings, match=words.replace("(", r"\(").replace(")", r"\)")):
        ElasticSettings(**{field: bad})


def test_the_rules_of_other_layers_are_theirs():
    with pytest.raises(LimitBelowMinimum, match="below its minimum guarantee"):
        ElasticSettings(limit="1G", min="2G")
    with pytest.raises(LimitBelowMinimum):
        replace(ElasticSettings(limit="4G", min="2G"), limit="1G")
    with pytest.raises(InvalidName):
        ElasticSettings(pool_name="no spaces")
    with pytest.raises(InvalidSettings, match="unknown kvlab settings"):
        ElasticSettings.from_dict({"limt": 3})


def test_an_engine_process_parses_its_settings_once():
    from kvlab.engines.vllm.settings import carry, for_engine_args, from_vllm_config

    data = ElasticSettings(limit="1G").with_engine_id().to_dict()
    config = SimpleNamespace(additional_config={"kvlab": data})
    first = from_vllm_config(config)
    assert first.limit == GiB and from_vllm_config(SimpleNamespace(additional_config={"kvlab": dict(data)})) is first
    assert not from_vllm_config(SimpleNamespace(additional_config={})).elastic
    # the process that builds the config keeps what it parsed; the others get it serialized
    built = SimpleNamespace(additional_config={"other": 1})
    carry(built, ElasticSettings(reserve="8M"))
    mine = from_vllm_config(built)
    assert mine.reserve == 8 * MiB and mine.engine_id and from_vllm_config(built) is mine
    assert ElasticSettings.from_dict(built.additional_config["kvlab"]) == mine and built.additional_config["other"] == 1
    # the serialized object replaces the environment's settings; without one the environment counts
    assert for_engine_args(SimpleNamespace(additional_config={"kvlab": {"limit": "3G"}})).limit == 3 * GiB


def test_settings_import_without_vllm_or_torch():
    code = "import sys, kvlab.settings, kvlab.engines.vllm.settings; print(sorted(m for m in sys.modules " \
           "if m.split('.')[0] in ('vllm', 'torch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
