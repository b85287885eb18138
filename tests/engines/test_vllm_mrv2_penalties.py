"""Model Runner V2's penalty statistics leave an idle elastic worker and come back for penalized requests.

Built from the installed vLLM's own MRV2 classes (RequestState, LogitsProcRequestState, PenaltiesState)
on the CPU; only the runner and worker around them are plain namespaces. vLLM's bincount is a Triton
kernel, which the CPU build cannot run: a stand-in records what it was given, so the test checks that
the statistics exist, zeroed and at their original shapes, by the time vLLM counts a penalized request.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm")
penalties = pytest.importorskip("vllm.v1.worker.gpu.sample.penalties")
states = pytest.importorskip("vllm.v1.worker.gpu.states")
buffer_utils = pytest.importorskip("vllm.v1.worker.gpu.buffer_utils")

from vllm import SamplingParams  # noqa: E402

from kvlab.engines.vllm import compat  # noqa: E402

REQS, VOCAB, LEN = 4, 1000, 64
STAT_BYTES = REQS * VOCAB * 4 + REQS * -(-VOCAB // 32) * 4  # int32 counts + a bit per token, per slot


@pytest.fixture
def worker(monkeypatch):
    # vLLM takes the CPU platform for UVA-capable, but a CPU-only torch has no pinned memory: its plain
    # host buffers (NonUvaBuffer) instead, as on a machine without UVA.
    monkeypatch.setattr(buffer_utils, "is_uva_available", lambda: False)
    try:
        from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcRequestState
    except ImportError:  # read in 0.27's source: the same attributes, but no buffers without pinned memory
        pytest.skip("this vLLM's MRV2 buffers need pinned memory (UVA), which a CPU-only torch has not")
    req_states = states.RequestState(REQS, LEN, LEN, 0, VOCAB, torch.device("cpu"))
    state = penalties.PenaltiesState(None, LogitsProcRequestState.from_request_state(req_states))
    return SimpleNamespace(model_runner=SimpleNamespace(sampler=SimpleNamespace(penalties_state=state),
                                                        req_states=req_states))


@pytest.fixture
def counted(monkeypatch):
    calls = []

    def bincount(idx, all_token_ids, prompt_len, prefill_len, prompt_bin_mask, output_bin_counts, max_len):
        calls.append((idx.tolist(), prompt_bin_mask, output_bin_counts))

    monkeypatch.setattr(penalties, "bincount", bincount)
    return calls


def _add(worker, req_id, **params):
    runner = worker.model_runner
    runner.req_states.add_request(req_id, 3, [1, 2, 3], 0, 8)
    idx = runner.req_states.req_id_to_index[req_id]
    runner.sampler.penalties_state.add_request(idx, SamplingParams(max_tokens=8, **params))
    return idx


def test_dropped_while_idle_and_kept_while_a_request_runs(worker):
    state = worker.model_runner.sampler.penalties_state
    _add(worker, "a")
    assert compat.release_penalty_statistics(worker) == 0  # a request holds a slot: keep them
    assert state.output_bin_counts is not None
    worker.model_runner.req_states.req_id_to_index.clear()
    assert compat.release_penalty_statistics(worker) == STAT_BYTES
    assert state.output_bin_counts is None and state.prompt_bin_mask is None
    assert compat.release_penalty_statistics(worker) == 0  # nothing left to drop


def test_back_zeroed_before_a_penalized_request_is_counted(worker, counted):
    state = worker.model_runner.sampler.penalties_state
    shapes = {n: (tuple(getattr(state, n).shape), getattr(state, n).dtype) for n in ("output_bin_counts",
                                                                                       "prompt_bin_mask")}
    compat.release_penalty_statistics(worker)
    _add(worker, "plain", temperature=0.0)
    state.apply_staged_writes()
    assert state.output_bin_counts is None and counted == []  # no penalty: nothing comes back
    idx = _add(worker, "penalized", frequency_penalty=0.5)
    state.apply_staged_writes()
    assert [c[0] for c in counted] == [[idx]]
    _, mask, counts = counted[0]
    assert counts is state.output_bin_counts and mask is state.prompt_bin_mask
    for name, (shape, dtype) in shapes.items():
        t = getattr(state, name)
        assert (tuple(t.shape), t.dtype, t.device.type) == (shape, dtype, "cpu") and not t.any()
    worker.model_runner.req_states.req_id_to_index.clear()
    assert compat.release_penalty_statistics(worker) == STAT_BYTES  # and go again once idle
    assert state.output_bin_counts is None


def test_other_runners_are_left_alone():
    v1 = SimpleNamespace(model_runner=SimpleNamespace(sampler=SimpleNamespace()))  # V1: no penalties_state
    assert compat.release_penalty_statistics(v1) == 0
    assert compat.release_penalty_statistics(SimpleNamespace(model_runner=None)) == 0
