"""An offline byte-level BPE tokenizer with a ChatML template, trained on built-in text.

No model hub is reachable in CI or on the GPU machine, so tokenizers are trained here. The corpus is
a fixed paragraph plus sentences from a tiny seeded grammar; training is single-threaded so the result
is byte-for-byte reproducible. When the corpus cannot fill the requested vocabulary (real shapes want
~152k tokens), extra merges of existing tokens are appended, lowest priority: they never change how
the trained merges split text, they only make the vocabulary the exact size the model's embedding has.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# ChatML, as Qwen2 uses; generation prompts open an assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_PARAGRAPH = """\
Large language models keep the keys and values of every token they have seen in a cache, so that each
new token attends to the past without recomputing it. Serving engines reserve that cache up front as
one big pool of fixed-size blocks. The pool is sized for the worst case, so most of it sits idle most
of the time. Elastic memory reserves only address space at start-up and backs it with physical pages
while requests need them. When a burst of requests arrives, pages are mapped; when the burst is over,
pages go back to the device, and another model can use them. A scheduler decides which blocks each
request gets; a worker maps the pages under those blocks before the forward pass reads or writes them.
Prefix caching keeps the blocks of finished requests so that a later request with the same prompt can
skip the work, and it gives them up page by page when memory is needed elsewhere.
The quick brown fox jumps over the lazy dog. 0123456789 +-*/=<>()[]{} .,;:!? 'quoted' "double"
"""

_NOUNS = ("model cache page block token request engine worker scheduler memory device tensor layer head "
          "batch prompt answer server client kernel buffer pool limit graph queue stream signal").split()
_VERBS = ("maps unmaps reads writes holds frees schedules evicts copies returns sends waits grows shrinks "
          "measures starts stops serves computes checks").split()
_ADJS = ("small large idle busy free mapped cached elastic static fast slow warm cold shared private "
         "new old long short").split()


def corpus(n_sentences: int = 4000, seed: int = 1234) -> list[str]:
    """Built-in training text: the paragraph, then seeded sentences and numbers."""
    rng = random.Random(seed)
    lines = _PARAGRAPH.splitlines()
    for i in range(n_sentences):
        words = [rng.choice(_ADJS), rng.choice(_NOUNS), rng.choice(_VERBS), "the", rng.choice(_ADJS),
                 rng.choice(_NOUNS)]
        if i % 3 == 0:
            words += ["in", str(rng.randrange(10_000)), rng.choice(_NOUNS) + "s"]
        sentence = " ".join(words)
        lines.append(sentence[0].upper() + sentence[1:] + rng.choice(".!?"))
    return lines


def _extend(vocab: dict[str, int], merges: list, target: int, seed: int) -> None:
    """Append low-priority merges of existing tokens until the vocabulary has ``target`` entries."""
    rng = random.Random(seed)
    pieces = [t for t in sorted(vocab, key=vocab.get) if t not in SPECIAL_TOKENS]
    while len(vocab) < target:
        a, b = rng.choice(pieces), rng.choice(pieces)
        if len(a) + len(b) > 16 or (a + b) in vocab:
            continue
        vocab[a + b] = len(vocab)
        merges.append([a, b])
        pieces.append(a + b)


def train_tokenizer(vocab_size: int, out_dir: Path, bos_eos: str = "<|endoftext|>") -> int:
    """Write tokenizer.json and tokenizer_config.json into ``out_dir``; returns the vocabulary size."""
    # One thread: tokenizers' parallel BPE training is not guaranteed to break ties identically.
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(vocab_size, 4096), special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    spec = json.loads(tok.to_str())
    vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
    if len(vocab) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is below the byte alphabet plus special tokens ({len(vocab)})")
    _extend(vocab, merges, vocab_size, seed=vocab_size)
    spec["model"]["vocab"], spec["model"]["merges"] = vocab, merges
    (out_dir / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))

    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": bos_eos,
        "unk_token": None,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "model_max_length": 1 << 20,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "special_tokens_map.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "pad_token": bos_eos, "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]},
        indent=2))
    return Tokenizer.from_str(json.dumps(spec)).get_vocab_size(with_added_tokens=True)


def token_id(out_dir: Path, token: str) -> int:
    spec = json.loads((out_dir / "tokenizer.json").read_text())
    return next(t["id"] for t in spec["added_tokens"] if t["content"] == token)
