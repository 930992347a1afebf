"""Make W&B safe to use anywhere: never hang, never die for want of credentials."""

from __future__ import annotations

import netrc
import os
import sys
import urllib.error
import urllib.request
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
    """The W&B server's health check answers 2xx within the timeout. A bare TCP connect or any
    HTTP answer is not enough: proxies and sandboxes accept connections and answer 404/403."""
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").rstrip("/")
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):  # HTTPError (4xx/5xx) is a URLError
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
        return "offline", (
            f"W&B server unreachable within {timeout_s:.0f} s: logging offline (`wandb sync` later; "
            "WANDB_MODE=online forces online)"
        )
    return "online", None


def configure_wandb(timeout_s: float = 5.0) -> str:
    """Set WANDB_MODE for this process (and bounded init timeouts); print a one-line notice on fallback."""
    mode, notice = choose_wandb_mode(timeout_s)
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_INIT_TIMEOUT", "60")
    # Flush W&B's local transaction log every second (default 15 s): a SIGKILLed run keeps
    # its history up to a second before the kill; a resumed run re-logs from its checkpoint.
    os.environ.setdefault("WANDB__TRANSACTION_LOG_FLUSH_INTERVAL", "1")
    os.environ.setdefault("WANDB_SILENT", "true")
    if notice:
        print(f"lightclf: {notice}", file=sys.stderr)
    return mode
