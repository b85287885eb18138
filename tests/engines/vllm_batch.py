"""The workload of the vLLM engine tests: fixed, seeded token prompts and greedy fixed-length outputs.

With kvlab's tiny model a 128-token block takes 64 KiB per layer, a 2 MiB page holds 32 blocks
(4096 tokens) of a layer and a chunk is 4 pages (8 MiB): the two long prompts cross page boundaries
and the 32 sequences together need about 8 chunks.
"""

import random

GiB, MiB = 1 << 30, 1 << 20
KV_BYTES = GiB
MAX_TOKENS = 24
LENGTHS = [5000, 2600] + [64 + 41 * i for i in range(30)]


def prompts(lengths=LENGTHS, seed=0):
    rng = random.Random(seed)
    return [{"prompt_token_ids": [rng.randrange(10, 4000) for _ in range(n)]} for n in lengths]


def generate(llm, batch):
    from vllm import SamplingParams

    outs = llm.generate(batch, SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True), use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]
