"""kvlab.models: offline random-weight models of real architectures (no model hub needed)."""

from .synthetic import SIZES, synthetic

__all__ = ["synthetic", "SIZES"]
