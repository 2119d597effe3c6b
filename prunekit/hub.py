"""A quick check that the Hugging Face hub can be reached, so offline runs fail in one line
instead of after half a minute of retries."""
from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse


@lru_cache(maxsize=1)
def hub_unreachable_reason() -> str | None:
    """None when the hub answers a TCP connect; otherwise why not, phrased for a message."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return "HF_HUB_OFFLINE=1"
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=3):
            return None
    except OSError as e:
        return f"offline? {host} unreachable: {e.strerror or e}"
