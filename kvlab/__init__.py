"""kvlab: elastic KV-cache memory for LLM serving, and a Jupyter lab to watch it happen."""

__version__ = "0.1.0"
