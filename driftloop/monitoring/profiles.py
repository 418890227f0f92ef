"""Reference profiles stored beside a registry version.

Key: ``models/<model>/<version>/reference_profile.json`` (next to the version's
``manifest.json``), written by training or by ``save_profile`` for a chosen window.
"""

from __future__ import annotations

from driftloop.blob import BlobStore
from driftloop.drift import DriftInputError, ReferenceProfile
from driftloop.errors import BadRequest, NotFound
from driftloop.registry import Registry

PROFILE_FILE = "reference_profile.json"


def profile_key(model: str, version: str) -> str:
    return f"{Registry.version_prefix(model, version)}/{PROFILE_FILE}"


def save_profile(store: BlobStore, model: str, version: str, profile: ReferenceProfile) -> str:
    """Store ``profile`` for the version (atomic put); returns the key."""
    key = profile_key(model, version)
    store.put(key, profile.to_json())
    return key


def load_profile(store: BlobStore, model: str, version: str) -> ReferenceProfile:
    """The version's profile; ``NotFound`` when none is stored, ``BadRequest`` when unreadable."""
    key = profile_key(model, version)
    try:
        raw = store.get(key)
    except KeyError as e:
        raise NotFound(
            f"no reference profile for model {model!r} version {version!r} ({key})"
        ) from e
    try:
        return ReferenceProfile.from_json(raw)
    except DriftInputError as e:
        raise BadRequest(f"reference profile {key} is unreadable: {e}") from e
