"""kvlab.engines: adapters that make serving engines allocate their KV cache from kvlab arenas."""
