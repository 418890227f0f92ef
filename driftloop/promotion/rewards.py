"""The bandit's reward stream: feedback ``reward``s joined to the version that answered.

Read from two topics, not from ``driftloop.labeled``: the feedback topic carries each
reward the moment intake accepts it, and the predictions topic names the version that
answered each prediction id (the server's own record, never the client's word). Joining
them here costs a dictionary lookup, so a reward moves the weights on the next refresh
(``bandit.refresh_s``, a second by default); the labeled topic would add the Flink join
(its windows and checkpoints) and is not there at all where Flink does not run.

State per (model, challenger) lives in the blob store next to the promotion record
(``promotions/<model>/<version>.bandit.json``): the arms, the Kafka offsets read so far
and the predictions still waiting for their reward (bounded), so a restarted promote
function resumes the bandit where it stopped instead of starting over. A prediction is
rewarded once (the first reward for it counts; later corrections do not double-count).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from driftloop import events as ev
from driftloop import topics
from driftloop.blob import BlobStore
from driftloop.errors import DriftloopError, Unavailable
from driftloop.naming import safe_segment
from driftloop.promotion.bandit import Arm
from driftloop.settings import Settings

if TYPE_CHECKING:
    from kafka import KafkaConsumer

log = logging.getLogger("driftloop.promotion")

MAX_PENDING = 50_000
"""Predictions (and early rewards) waiting for their other half, oldest dropped first."""


def state_key(model: str, version: str) -> str:
    m, v = safe_segment(model, field="model"), safe_segment(version, field="version")
    return f"promotions/{m}/{v}.bandit.json"


@dataclass
class RewardState:
    """What the reader has counted: arms, offsets, and the halves still unmatched."""

    arms: dict[str, Arm] = field(default_factory=dict)
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)
    answered: OrderedDict[str, str] = field(default_factory=OrderedDict)
    """prediction id → version, for predictions not rewarded yet."""
    early: OrderedDict[str, float] = field(default_factory=OrderedDict)
    """prediction id → reward, for rewards read before their prediction."""
    rewarded: int = 0
    ignored: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "arms": {v: a.to_dict() for v, a in self.arms.items()},
            "offsets": {t: {str(p): o for p, o in po.items()} for t, po in self.offsets.items()},
            "answered": list(self.answered.items()),
            "early": list(self.early.items()),
            "rewarded": self.rewarded,
            "ignored": self.ignored,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RewardState:
        return cls(
            {v: Arm.from_dict(a) for v, a in (d.get("arms") or {}).items()},
            {
                t: {int(p): int(o) for p, o in po.items()}
                for t, po in (d.get("offsets") or {}).items()
            },
            OrderedDict((str(k), str(v)) for k, v in d.get("answered") or []),
            OrderedDict((str(k), float(v)) for k, v in d.get("early") or []),
            int(d.get("rewarded", 0)),
            int(d.get("ignored", 0)),
        )

    def _remember(self, table: OrderedDict[str, Any], key: str, value: Any) -> None:
        table[key] = value
        while len(table) > MAX_PENDING:
            table.popitem(last=False)

    def prediction(self, pid: str, version: str) -> None:
        reward = self.early.pop(pid, None)
        if reward is not None:
            self._count(version, reward)
        else:
            self._remember(self.answered, pid, version)

    def reward(self, pid: str, reward: float) -> None:
        version = self.answered.pop(pid, None)
        if version is not None:
            self._count(version, reward)
        elif pid not in self.early:
            self._remember(self.early, pid, reward)

    def _count(self, version: str, reward: float) -> None:
        if version in self.arms:
            self.arms[version] = self.arms[version].add(reward)
            self.rewarded += 1
        else:
            self.ignored += 1  # a version outside the bandit (an older champion)


class RewardReader:
    """Incrementally reads new predictions and rewards of one model's bandit."""

    def __init__(
        self,
        settings: Settings,
        store: BlobStore,
        model: str,
        challenger: str,
        versions: list[str],
        since_ms: int,
    ) -> None:
        self.settings, self.store, self.model = settings, store, model
        self.key = state_key(model, challenger)
        self.since_ms = since_ms
        self.state = self._load(versions)
        self._consumer: KafkaConsumer | None = None

    def _load(self, versions: list[str]) -> RewardState:
        try:
            state = RewardState.from_dict(json.loads(self.store.get(self.key)))
        except KeyError:
            state = RewardState()
        for v in versions:
            state.arms.setdefault(v, Arm())
        return state

    def save(self) -> None:
        self.store.put(self.key, json.dumps(self.state.to_dict()).encode())

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _open(self) -> KafkaConsumer:
        from kafka import KafkaConsumer, TopicPartition

        from driftloop.bus import client_config

        if self._consumer is not None:
            return self._consumer
        c = KafkaConsumer(
            **client_config(self.settings, "bandit-rewards"),
            group_id=None,
            enable_auto_commit=False,
            reconnect_backoff_max_ms=2_000,
        )
        tps = [
            TopicPartition(t, p)
            for t in (topics.PREDICTIONS, topics.FEEDBACK)
            for p in sorted(c.partitions_for_topic(t) or ())
        ]
        c.assign(tps)
        by_time = c.offsets_for_times(dict.fromkeys(tps, max(self.since_ms, 0)))
        end = c.end_offsets(tps)
        for tp in tps:
            done = self.state.offsets.get(tp.topic, {}).get(tp.partition)
            hit = by_time.get(tp)
            c.seek(tp, done if done is not None else (hit.offset if hit else end[tp]))
        self._consumer = c
        return c

    def poll(self, timeout_ms: int = 200) -> Mapping[str, Arm]:
        """Read what arrived since the last poll (up to the ends seen now), save, and
        return the arms. Kafka unreachable: ``Unavailable`` (the caller fails closed)."""
        from kafka.errors import KafkaError

        try:
            c = self._open()
            if len({tp.topic for tp in c.assignment()}) < 2:
                # A topic not created yet when the reader opened: look again (the
                # offsets read so far are kept, so nothing is read twice).
                self._offsets_from(c)
                self.close()
                c = self._open()
            end = c.end_offsets(list(c.assignment()))
            todo = {tp for tp, off in end.items() if c.position(tp) < off}
            rounds = 0
            while todo and rounds < 50:
                rounds += 1
                for tp, msgs in c.poll(timeout_ms=timeout_ms, max_records=5000).items():
                    for m in msgs:
                        self._take(tp.topic, m.value, m.headers, m.key)
                todo = {tp for tp in todo if c.position(tp) < end[tp]}
            self._offsets_from(c)
        except KafkaError as e:
            self.close()
            raise Unavailable(f"rewards of {self.model} unreadable from Kafka: {e}") from e
        self.save()
        return dict(self.state.arms)

    def _offsets_from(self, c: KafkaConsumer) -> None:
        for tp in c.assignment():
            self.state.offsets.setdefault(tp.topic, {})[tp.partition] = c.position(tp)

    def _take(self, topic: str, value: bytes | None, headers: Any, key: bytes | None) -> None:
        try:
            event = ev.from_kafka(value, headers, key)
        except DriftloopError:
            return
        data = event.data if isinstance(event.data, Mapping) else {}
        if data.get("model") != self.model:
            return
        if topic == topics.PREDICTIONS:
            if data.get("shadow") is True:
                return  # a mirrored answer never reached anyone: nothing to reward
            if isinstance(data.get("version"), str):
                self.state.prediction(event.id, data["version"])
            return
        reward, pid = data.get("reward"), data.get("prediction_id")
        if (
            isinstance(pid, str)
            and isinstance(reward, int | float)
            and not isinstance(reward, bool)
        ):
            self.state.reward(pid, float(reward))


__all__ = ["MAX_PENDING", "RewardReader", "RewardState", "state_key"]
