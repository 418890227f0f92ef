"""The promote service's state in the blob store, so a restarted function resumes a bake
in progress and two replicas never promote one model at once::

    promotions/<model>/<version>.json        the version's promotion (phase, verdicts)
    promotions/<model>/active.json           the model's lease: one promotion at a time
    promotions/<model>/history/<ts>-<n>.json every phase change, append-only
    promotions/<model>/bake/<version>.json   the bake's latest verdicts

The lease is created if absent (``BlobStore.put_if_absent``) when a promotion starts and
deleted when it ends; another version's live lease is a ``Conflict`` (409: event delivery
retries later), a lease whose holder is gone is broken.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

from driftloop.blob import BlobStore
from driftloop.errors import Conflict, Unavailable
from driftloop.naming import safe_segment
from driftloop.promotion.guard import GuardVerdict
from driftloop.promotion.records import FINAL, VERSION, Lease, LeaseAction, Promotion
from driftloop.promotion.shadow import ShadowVerdict
from driftloop.retrain.state import iso, now_utc, parse_iso

log = logging.getLogger("driftloop.promotion")
STALE_HAND_S = 600.0
"""A lease of a hand promotion or rollback older than this is from a process that died."""
STALE_GATE_S = 1800.0
"""A lease whose promotion is still in its gate after this long: the gate died with its
process and its event was not redelivered."""
KEPT_VERDICTS = 20


class PromotionLedger:
    """Promotions, leases, history and bake verdicts of every model, in one blob store."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    # ------------------------------------------------------------ promotions

    def _key(self, model: str, version: str) -> str:
        m, v = safe_segment(model, field="model"), safe_segment(version, field="version")
        return f"promotions/{m}/{v}.json"

    def save(self, p: Promotion) -> Promotion:
        self.store.put(self._key(p.model, p.version), json.dumps(p.to_dict()).encode())
        return p

    def record(self, p: Promotion) -> Promotion:
        """Save a phase change and append it to the model's history (never rewritten)."""
        self.save(p)
        stamp = now_utc().strftime("%Y%m%dT%H%M%S%fZ")
        entry = {
            "at": iso(now_utc()),
            "model": p.model,
            "version": p.version,
            "phase": p.phase,
            "champion": p.champion,
            "reason": p.reason,
        }
        self.store.put_if_absent(
            f"{self._history_prefix(p.model)}{stamp}-{uuid.uuid4().hex[:8]}.json",
            json.dumps(entry).encode(),
        )
        return p

    def history(self, model: str) -> list[dict[str, Any]]:
        """Every phase change of the model's promotions, oldest first."""
        prefix = self._history_prefix(model)
        return [json.loads(self.store.get(k)) for k in self.store.list(prefix)]

    @staticmethod
    def _history_prefix(model: str) -> str:
        return f"promotions/{safe_segment(model, field='model')}/history/"

    def state(self, model: str, version: str) -> Promotion | None:
        try:
            return Promotion.from_dict(json.loads(self.store.get(self._key(model, version))))
        except KeyError:
            return None

    def promotions(self) -> Iterator[Promotion]:
        """Every recorded promotion (unreadable records skipped)."""
        for key in self.store.list("promotions/"):
            parts = key.split("/")
            if len(parts) != 3 or not VERSION.fullmatch(parts[2].removesuffix(".json")):
                continue
            try:
                yield Promotion.from_dict(json.loads(self.store.get(key)))
            except (KeyError, ValueError, TypeError):
                continue

    # ------------------------------------------------------------ one promotion per model

    def _lease_key(self, model: str) -> str:
        return f"promotions/{safe_segment(model, field='model')}/active.json"

    def lease(self, model: str) -> Lease | None:
        """The model's current lease, if a promotion (or a hand action) is in progress."""
        try:
            return Lease(**json.loads(self.store.get(self._lease_key(model))))
        except KeyError:
            return None

    def stale(self, lease: Lease) -> bool:
        """A lease whose holder is gone: its promotion ended, or it is too old to be alive."""
        age = (now_utc() - parse_iso(lease.since)).total_seconds()
        if lease.action != "promotion":
            return age > STALE_HAND_S
        p = self.state(lease.model, lease.version)
        if p is None:
            return age > 60
        return p.phase in FINAL or (p.phase == "gate" and age > STALE_GATE_S)

    def acquire(self, model: str, version: str, action: LeaseAction) -> Lease:
        """Hold the model's lease for ``version``: a fresh one, or the one ``version``'s own
        promotion holds. Another version's live lease is a ``Conflict``."""
        mine = Lease(model, version, action, iso(now_utc()), uuid.uuid4().hex)
        for _ in range(5):
            if self.store.put_if_absent(
                self._lease_key(model), json.dumps(mine.to_dict()).encode()
            ):
                return mine
            holder = self.lease(model)
            if holder is None:
                continue  # released meanwhile
            if holder.version == version and holder.action == "promotion":
                return holder
            if self.stale(holder):
                log.warning(
                    "%s: breaking the stale lease of v%s (%s since %s)",
                    model,
                    holder.version,
                    holder.action,
                    holder.since,
                )
                self.release(holder)
                continue
            raise Conflict(
                f"{model}: v{holder.version}'s {holder.action} is in progress "
                f"(since {holder.since}); one promotion per model at a time, so "
                f"v{version} has to wait until it ends"
            )
        raise Unavailable(f"{model}: the promotion lease kept changing hands; retry")

    def release(self, lease: Lease) -> None:
        """Delete the lease if it is still this one (same holder and nonce)."""
        current = self.lease(lease.model)
        if current is not None and current.nonce == lease.nonce:
            self.store.delete(self._lease_key(lease.model))

    def release_for(self, model: str, version: str) -> None:
        """The promotion of ``version`` ended: free the model for the next one."""
        current = self.lease(model)
        if current is not None and current.version == version:
            self.release(current)

    # ------------------------------------------------------------ bake verdicts

    def _verdicts_key(self, model: str, version: str) -> str:
        m, v = safe_segment(model, field="model"), safe_segment(version, field="version")
        return f"promotions/{m}/bake/{v}.json"

    def verdicts(self, model: str, version: str) -> list[dict[str, Any]]:
        """The bake's latest verdicts (each with its reason), oldest first."""
        try:
            return list(json.loads(self.store.get(self._verdicts_key(model, version))))
        except KeyError:
            return []

    def note_verdict(
        self, model: str, version: str, verdict: GuardVerdict | ShadowVerdict
    ) -> tuple[dict[str, Any], ...]:
        """Kept beside the promotion record, so the bake never rewrites the record itself
        (a hand promotion or rollback from another process may be writing it)."""
        seen = [*self.verdicts(model, version), {"at": iso(now_utc()), **verdict.to_dict()}]
        kept = seen[-KEPT_VERDICTS:]
        self.store.put(self._verdicts_key(model, version), json.dumps(kept).encode())
        return tuple(kept)

    def clear_verdicts(self, model: str, version: str) -> None:
        """A fresh bake starts without the verdicts of an earlier one."""
        self.store.delete(self._verdicts_key(model, version))


__all__ = ["STALE_GATE_S", "STALE_HAND_S", "PromotionLedger"]
