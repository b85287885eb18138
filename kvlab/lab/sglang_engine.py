"""What a Server needs to start SGLang's OpenAI-compatible server instead of vLLM's.

SGLang serves on NVIDIA GPUs, and on the CPU through its CPU backend (``--device cpu``), which without
sgl-kernel's CPU build (not on PyPI: the ``sglang-kernel`` wheel carries CUDA kernels only) falls back to
torch-native attention: slow, but a real SGLang server (checked: sglang 0.5.23 with torch 2.14.1).
Elastic memory is switched on by the environment (``KVLAB_ELASTIC=1``, as for vLLM); SGLang's
scheduler processes load kvlab's ``sglang.srt.plugins`` entry point themselves.
"""

from __future__ import annotations

import importlib.util
import re

from .errors import UnsupportedSetup

ENGINES = ("vllm", "sglang")


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    return engine


def installed_version() -> str | None:
    if importlib.util.find_spec("sglang") is None:
        return None
    from kvlab.engines.sglang import compat

    return compat.installed_version()


def resolve_device(device, gpus: int) -> str:
    """'cpu' or 'cuda:N' for SGLang; None picks cuda:0 where there is a GPU, else the CPU."""
    version = installed_version()
    if version is None:
        raise UnsupportedSetup("engine='sglang' needs SGLang in this Python environment: pip install "
                               "'sglang==0.5.23' (it needs torch 2.14.1 and an NVIDIA GPU)")
    if isinstance(device, bool):
        raise ValueError(f"device must be None, 'cuda', 'cuda:N' or an int, got {device!r}")
    if device is None and gpus == 0:
        return "cpu"
    text = "cuda:0" if device is None else (f"cuda:{device}" if isinstance(device, int) else str(device).strip().lower())
    if text == "cuda":
        text = "cuda:0"
    if text == "cpu":
        return "cpu"
    m = re.fullmatch(r"cuda:(\d+)", text)
    if not m:
        raise ValueError(f"device must be None, 'cuda', 'cuda:N' or an int, got {device!r}")
    if int(m.group(1)) >= gpus:
        raise UnsupportedSetup(f"engine='sglang' on {text}: this machine has {gpus} NVIDIA GPU(s)")
    return text


def check_memory(memory: str) -> None:
    """Refuse, in the notebook's process, an SGLang that kvlab's elastic adapter was not checked on."""
    if memory == "elastic":
        from kvlab.engines.sglang import compat

        try:
            compat.check(installed_version() or "")
        except compat.UnsupportedSGLang as e:
            raise UnsupportedSetup(str(e)) from None
    if memory == "kvcached" and importlib.util.find_spec("kvcached") is None:
        raise UnsupportedSetup("memory='kvcached' needs the kvcached package (pip install kvcached); use "
                               "memory='elastic' for kvlab's own elastic KV cache")


def command(python: str, model: str, host: str, port: int, device: str, flags: list[str]) -> list[str]:
    where = ["--device", "cpu"] if device == "cpu" else []  # cuda:N reaches SGLang as CUDA_VISIBLE_DEVICES
    return [python, "-m", "sglang.launch_server", "--model-path", model, "--host", host, "--port", str(port),
            *where, *flags]
