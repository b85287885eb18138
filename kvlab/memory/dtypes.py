"""DLPack dtype codes for the dtypes a KV cache uses, accepted as strings, NumPy or torch dtypes."""

from __future__ import annotations

import numpy as np

from .errors import InvalidArgument

# (DLPack type code, bits). Codes from dlpack.h: Int 0, UInt 1, Float 2, Bfloat 4, Bool 6.
_DTYPES = {
    "int8": (0, 8), "int16": (0, 16), "int32": (0, 32), "int64": (0, 64),
    "uint8": (1, 8), "uint16": (1, 16), "uint32": (1, 32), "uint64": (1, 64),
    "float16": (2, 16), "float32": (2, 32), "float64": (2, 64), "bfloat16": (4, 16),
    "bool": (6, 8),
}
_ALIASES = {"half": "float16", "float": "float32", "double": "float64", "bf16": "bfloat16",
            "fp16": "float16", "fp32": "float32"}


def dlpack_dtype(dtype) -> tuple[str, int, int]:
    """(name, DLPack code, bits) for a dtype given as a string, numpy dtype or torch dtype."""
    name = str(dtype)
    if name.startswith("torch."):
        name = name[len("torch."):]
    elif not isinstance(dtype, str):
        try:  # numpy dtypes and scalar types (np.float16, np.dtype("f2"))
            name = np.dtype(dtype).name
        except TypeError:
            pass
    name = _ALIASES.get(name, name)
    if name not in _DTYPES:
        raise InvalidArgument(f"unsupported dtype {dtype!r}; kvlab views support {', '.join(sorted(_DTYPES))}")
    code, bits = _DTYPES[name]
    return name, code, bits
