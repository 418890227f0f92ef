"""What the local stack's state files say: sink endpoints and the dispatcher's heartbeat."""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["endpoint_url", "endpoints_from_stack", "heartbeat_path"]


def endpoint_url(endpoint: str) -> str:
    return endpoint if "://" in endpoint else f"http://{endpoint}"


def endpoints_from_stack(state_dir: Path) -> dict[str, str]:
    """Component name → URL from ``<state_dir>/stack.json`` (what ``driftloop up`` started)."""
    try:
        components = json.loads((state_dir / "stack.json").read_text())["components"]
    except (FileNotFoundError, ValueError, KeyError):
        return {}
    return {
        str(c["name"]): endpoint_url(str(c["endpoint"]))
        for c in components
        if c.get("endpoint") and c.get("name") not in {"kafka", "dispatcher"}
        and not re.fullmatch(r"kafka-\d+", str(c.get("name")))  # the brokers of 'ha'
    }


def heartbeat_path(state_dir: Path) -> Path:
    """The file the dispatcher rewrites every second with its plan and route states."""
    return state_dir / "dispatcher.json"
