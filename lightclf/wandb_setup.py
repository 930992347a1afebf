"""Make W&B safe to use anywhere: never hang, never die for want of credentials."""

from __future__ import annotations

import netrc
import os
import socket
import sys
from urllib.parse import urlparse

__all__ = ["choose_wandb_mode", "configure_wandb"]


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(timeout_s: float) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "api.wandb.ai", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def choose_wandb_mode(timeout_s: float = 5.0) -> tuple[str, str | None]:
    """(mode, notice): the user's WANDB_MODE if set, else online only with a key and a reachable server."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"], None
    if not _has_api_key():
        return (
            "offline",
            "no W&B API key found: logging offline (run `wandb login`, then `wandb sync runs/wandb/offline-run-*`)",
        )
    if not _reachable(timeout_s):
        return "offline", f"W&B server unreachable within {timeout_s:.0f} s: logging offline (`wandb sync` later)"
    return "online", None


def configure_wandb(timeout_s: float = 5.0) -> str:
    """Set WANDB_MODE for this process (and bounded init timeouts); print a one-line notice on fallback."""
    mode, notice = choose_wandb_mode(timeout_s)
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_INIT_TIMEOUT", "60")
    os.environ.setdefault("WANDB_SILENT", "true")
    if notice:
        print(f"lightclf: {notice}", file=sys.stderr)
    return mode
