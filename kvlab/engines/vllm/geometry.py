"""Block <-> page arithmetic shared by the scheduler and the workers.

vLLM stores layer ``l``'s part of block ``b`` at a fixed stride inside that layer's region of the KV
buffer. A page therefore holds ``page_size / block_bytes`` consecutive blocks of one layer, and
mapping a block means mapping one page in *every* layer. The unit of mapping is a *chunk*: the
smallest run of consecutive blocks whose bytes fill whole pages in each layer
(``lcm(page_size, block_bytes)`` bytes per layer). Chunk ``c`` is blocks ``[c*K, (c+1)*K)`` and owns
``pages_per_chunk`` pages that no other chunk touches, so the scheduler can count memory in chunks
and the workers can map exactly what the scheduler counted.

``page_size`` here is the unit the driver maps, one physical handle (``ElasticSettings.handle_bytes``):
a chunk never splits a handle, so it can be released whole. The arena's page map may be finer.

That holds only when every layer's region starts on a page boundary, i.e. when the number of blocks
is a multiple of K: workers round the KV memory they report to whole chunks to get there.

Several KV cache groups (hybrid models: sliding-window and full-attention layers) change nothing in
that arithmetic. vLLM gives every group one page size and one block pool, and its groups *alias* one
buffer: a block id belongs to one group at a time, and block ``b`` of the i-th layer of any group lies
at the same bytes. So a block costs ``block_bytes`` in each of ``num_layers`` layer *slots* (the
largest group's layer count), whatever group holds it, and a chunk is still K blocks that own their
pages. Only the specs differ: models whose caches are not attention (Mamba, linear attention) or whose
layers have different page sizes are refused with ``UnsupportedModel``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import compat


class UnsupportedModel(ValueError):
    """The model's KV cache does not fit kvlab's chunk arithmetic (e.g. Mamba hybrids, mixed page sizes)."""


def block_layout(kv_cache_groups, model_type: str) -> tuple[int, int]:
    """(block_bytes, layer slots) of vLLM's KV cache groups; UnsupportedModel naming the model if kvlab
    cannot serve them: state caches (Mamba, linear attention) or layers of different page sizes."""
    groups = [g for g in kv_cache_groups if g.layer_names]
    if not groups:
        raise UnsupportedModel(f"model type {model_type!r} has no KV cache (attention-free): kvlab elastic KV "
                               "memory has nothing to manage; turn it off for this model")
    specs = [spec for g in groups for spec in compat.layer_specs(g)]
    foreign = sorted({type(s).__name__ for s in specs if not compat.is_attention_spec(s)})
    if foreign:
        raise UnsupportedModel(
            f"kvlab elastic KV memory cannot serve model type {model_type!r}: its KV cache has {', '.join(foreign)} "
            "layers (recurrent state, as Mamba and linear-attention hybrids keep), and kvlab supports attention "
            "layers only (full, sliding-window, chunked-local; several groups are fine); turn elastic memory off "
            "for this model")
    sizes = sorted({s.page_size_bytes for s in specs})
    if len(sizes) != 1:
        raise UnsupportedModel(
            f"kvlab elastic KV memory cannot serve model type {model_type!r}: its layers keep KV blocks of "
            f"different sizes ({sizes} bytes) that vLLM could not unify into one page size; turn elastic memory "
            "off for this model")
    return sizes[0], max(len(g.layer_names) for g in groups)


@dataclass(frozen=True)
class ChunkGeometry:
    page_size: int      # bytes per mapped page
    block_bytes: int    # bytes one block takes in one layer (vLLM's KVCacheSpec.page_size_bytes)
    num_layers: int     # layers that own KV memory on this worker
    num_blocks: int     # blocks in the scheduler's pool, the null block 0 included
    num_groups: int = 1  # vLLM's KV cache groups sharing the pool (several for hybrid models)

    def __post_init__(self):
        for name in ("page_size", "block_bytes", "num_layers", "num_blocks", "num_groups"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def blocks_per_chunk(self) -> int:
        return self.page_size // math.gcd(self.page_size, self.block_bytes)

    @property
    def pages_per_layer(self) -> int:
        """Pages one chunk takes in one layer."""
        return self.blocks_per_chunk * self.block_bytes // self.page_size

    @property
    def pages_per_chunk(self) -> int:
        return self.pages_per_layer * self.num_layers

    @property
    def chunk_bytes(self) -> int:
        return self.pages_per_chunk * self.page_size

    @property
    def num_chunks(self) -> int:
        return self.num_blocks // self.blocks_per_chunk

    @property
    def aligned(self) -> bool:
        return self.num_blocks % self.blocks_per_chunk == 0

    def chunk_of(self, block_id: int) -> int:
        return block_id // self.blocks_per_chunk

    def blocks_of(self, chunk: int) -> range:
        k = self.blocks_per_chunk
        return range(chunk * k, (chunk + 1) * k)

    def require_aligned(self) -> None:
        if not self.aligned:
            raise ValueError(
                f"the KV cache has {self.num_blocks} blocks, not a multiple of the {self.blocks_per_chunk} blocks "
                f"that fill whole {self.page_size >> 10} KiB pages; kvlab rounds the KV memory it reports to whole "
                "chunks, so this happens only with num_gpu_blocks_override: make it a multiple of "
                f"{self.blocks_per_chunk} or leave it unset")

    @staticmethod
    def round_memory(available: int, block_bytes: int, num_layers: int, page_size: int) -> int:
        """The largest KV memory <= ``available`` that vLLM turns into a whole number of chunks.

        vLLM computes ``num_blocks = memory // (block_bytes * num_layers)``, ``num_layers`` being the
        layer slots (the largest group's layer count; all layers for a uniform model).
        """
        k = page_size // math.gcd(page_size, block_bytes)
        per_chunk = k * block_bytes * num_layers
        return max(available, 0) // per_chunk * per_chunk

    @classmethod
    def from_kv_cache_config(cls, kv_cache_config, page_size: int, model_type: str = "?") -> "ChunkGeometry":
        """Geometry of a vLLM KVCacheConfig: one or several groups of attention layers, one page size."""
        block_bytes, slots = block_layout(kv_cache_config.kv_cache_groups, model_type)
        groups = sum(1 for g in kv_cache_config.kv_cache_groups if g.layer_names)
        return cls(page_size=page_size, block_bytes=block_bytes, num_layers=slots,
                   num_blocks=kv_cache_config.num_blocks, num_groups=groups)
