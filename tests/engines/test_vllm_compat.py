"""vLLM's internals are used only in kvlab/engines/vllm/compat/ (and versions.py): a static scan.

Supporting another vLLM must mean editing one place. The scan reads the adapter's sources (no vLLM
needed) for imports of vllm, module paths into vllm, and the private names the adapter is known to
need; a new internal goes into compat/ with the versions it was checked on.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kvlab.engines.vllm as adapter

ADAPTER = Path(adapter.__file__).parent
COMPAT = sorted((ADAPTER / "compat").glob("*.py"))
ALLOWED = {"versions.py"}  # besides compat/, which the glob below does not reach
# vLLM internals the adapter reaches (attribute names); any of them outside compat/ is a leak.
PRIVATE = {
    "_reuse_watchers", "_notify_reuse", "_maybe_evict_cached_block", "fake_free_list_head",
    "fake_free_list_tail", "prev_free_block", "next_free_block", "_maybe_get_memory_pool_context",
    "init_snapshot", "requested_memory", "requested_cpu_memory", "_should_warm_up_model", "warming_up_model",
    "input_queue", "kv_cache_manager", "block_pool", "free_block_queue", "model_runner", "kv_caches",
    "kv_cache_tensors", "layer_stride", "block_stride", "_getframe", "f_locals", "f_back",
    "reset_buffer_cache", "penalties_state", "_new_penalties_reqs", "req_id_to_index",
}

LOGGER = "vllm.kvlab"  # kvlab's logger sits under vLLM's, so vLLM's handlers print it: a name, not an internal


def _is_compat(node) -> bool:
    return isinstance(node, ast.Name) and node.id == "compat"


def leaks(source: str) -> list[str]:
    """Every vLLM import, vLLM module path and known private name in a module's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] == "vllm"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "vllm":
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE and not _is_compat(node.value):
            found.append(f".{node.attr} (line {node.lineno})")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("vllm.") \
                and node.value != LOGGER:
            found.append(f"{node.value!r} (line {node.lineno})")
        elif isinstance(node, ast.FunctionDef) and node.name in PRIVATE:
            found.append(f"def {node.name} (line {node.lineno})")
    return found


def test_only_compat_touches_vllm_internals():
    modules = sorted(p for p in ADAPTER.glob("*.py") if p.name not in ALLOWED)
    assert len(modules) >= 10, modules  # the scan covers the adapter, not an empty folder
    bad = {p.name: found for p in modules if (found := leaks(p.read_text()))}
    assert not bad, f"vLLM internals outside compat/ (move them there with the versions checked): {bad}"


def test_the_scan_finds_what_compat_uses():
    assert [p.name for p in COMPAT] == ["__init__.py", "engine.py", "groups.py", "workers.py"]
    found = " ".join(f for p in COMPAT for f in leaks(p.read_text()))
    for expected in ("from vllm.v1.engine.core import", "._maybe_evict_cached_block", ".fake_free_list_head",
                     "def _maybe_get_memory_pool_context", ".init_snapshot", "'vllm.v1.worker.gpu_worker.Worker'"):
        assert expected in found, (expected, found)


def test_every_compat_entry_names_the_versions_it_was_checked_on():
    for path in COMPAT:
        source = path.read_text()
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                text = ast.get_source_segment(source, node)
                assert "checked" in text, f"compat.{node.name} does not say which vLLM versions it was checked on"
