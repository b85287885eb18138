"""Session fixtures for the vLLM engine tests: one stock-vLLM reference run (``tiny_model``: tests/conftest.py)."""

import pytest

from tests.engines.vllm_batch import KV_BYTES, LENGTHS, generate, prompts


@pytest.fixture(scope="session")
def static_reference(tiny_model):
    """Stock vLLM, in-process: its outputs for the batch (twice, the cache reset in between), for each
    prompt alone, and how much resident memory starting it cost.

    bf16 on CPU is not batch-invariant: a prompt whose logits nearly tie can get other tokens in
    another batch. ``stable`` lists the prompts whose output alone equals their output in the batch.
    """
    pytest.importorskip("vllm")
    from tests.engines.vllm_helpers import close_llm, make_llm, rss

    before = rss()
    llm = make_llm(tiny_model, KV_BYTES)
    started = rss() - before
    try:
        first = generate(llm, prompts(LENGTHS))
        llm.reset_prefix_cache()
        again = generate(llm, prompts(LENGTHS))
        alone = []
        for p in prompts(LENGTHS):
            llm.reset_prefix_cache()
            alone.append(generate(llm, [p])[0])
    finally:
        close_llm(llm)
    stable = [i for i, (a, b) in enumerate(zip(alone, first)) if a == b]
    return {"start_rss": started, "outputs": first, "again": again, "alone": alone, "stable": stable}
