"""lightclf: train, measure and compare lightweight image classifiers (Sun, Zhang & He 2020).

The house (README, "How lightclf is built"): the library (``models``, ``data``, ``measure``,
``training``) apart from the tools (``study``, ``deploy``) and the ``cli``; ``errors`` and
``runs`` at the bottom. Names below load on first use, so ``import lightclf.errors`` stays
free of torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["ConfigError", "DDSNet", "create_network", "__version__"]

_LAZY = {"ConfigError": "lightclf.errors", "DDSNet": "lightclf.models", "create_network": "lightclf.models"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightclf' has no attribute {name!r}")
