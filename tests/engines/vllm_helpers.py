"""Shared set-up for tests that run a real vLLM engine on CPU (in-process, 2 cores are enough)."""

import contextlib
import gc
import os

import psutil
from tests import residency
from tests.waiting import PeakOf


# In-process engines: one process, so resident memory and kvlab's state are visible to the test.
IN_PROCESS_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_HOST_IP": "127.0.0.1", "VLLM_LOGGING_LEVEL": "WARNING"}


@contextlib.contextmanager
def in_process_env():
    """IN_PROCESS_ENV (where the shell did not set them) while an engine is built, as it was afterwards:
    servers that later tests start must not inherit in-process settings."""
    added = {k: v for k, v in IN_PROCESS_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def make_llm(model, kv_bytes: int, kvlab: dict | None = None, **kwargs):
    """A CPU vLLM engine over ``model`` with an explicit KV cache; elastic when ``kvlab`` says so."""
    import kvlab.engines.vllm as kv

    kv.register()  # what the vllm.general_plugins entry point does in every vLLM process
    args = dict(model=str(model), enforce_eager=True, dtype="bfloat16", kv_cache_memory_bytes=kv_bytes,
                distributed_executor_backend="uni", max_model_len=8192, seed=0, max_num_seqs=64)
    args.update(kwargs)
    if kvlab is not None:
        args["additional_config"] = {"kvlab": kvlab}
    with in_process_env():
        from vllm import LLM

        return LLM(**args)


def close_llm(llm) -> None:
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


def scheduler_of(llm):
    """The engine core's scheduler of an in-process engine."""
    return llm.llm_engine.engine_core.engine_core.scheduler


def worker_stats(llm) -> dict:
    return llm.collective_rpc("kvlab_stats")[0]


def rss() -> int:
    return psutil.Process().memory_info().rss


def resident_bytes(pid: int, start: int, length: int) -> int:
    """Resident bytes of ``pid``'s memory in [start, start + length), from the kernel's page tables."""
    return residency.resident_bytes(start, length, pid)


class PeakResidency(PeakOf):
    """Samples ``resident_bytes(pid, start, length)`` every 10 ms while the ``with`` block runs; ``.peak``."""

    def __init__(self, pid: int, start: int, length: int):
        super().__init__(lambda: resident_bytes(pid, start, length))
