"""Consumer scaling of the local dispatcher, configured by the annotations the cluster reads.

On a cluster eventing-kafka-broker's KEDA autoscaler sizes each KafkaSource's and Trigger's
consumers from the ``autoscaling.eventing.knative.dev/…`` annotations: one consumer per
``lag-threshold`` records of lag, at most ``max-scale`` (and never more than the topics have
partitions, as KEDA's Kafka scaler does), scaled down only after ``cooldown-period``. The
local dispatcher reads the same annotations and sizes its consumers the same way, so a laptop
run and a cluster run are configured by the same keys. One difference, stated: locally a
route keeps at least one consumer (``min-scale: 0`` saves pods on a cluster; on a laptop it
would only add ``polling-interval`` of latency to the first record).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("driftloop.dispatcher")

GROUP = "autoscaling.eventing.knative.dev"
CLASS = f"{GROUP}/class"
MIN_SCALE = f"{GROUP}/min-scale"
MAX_SCALE = f"{GROUP}/max-scale"
POLLING_INTERVAL = f"{GROUP}/polling-interval"
COOLDOWN_PERIOD = f"{GROUP}/cooldown-period"
LAG_THRESHOLD = f"{GROUP}/lag-threshold"
ACTIVATION_LAG_THRESHOLD = f"{GROUP}/activation-lag-threshold"
KEDA_CLASS = "keda.autoscaling.knative.dev"
"""The values eventing-kafka-broker v0.50.1 declares (control-plane/pkg/autoscaler); the
annotation check (driftloop.annotations) holds the manifests to the same constants."""

DEFAULTS: Mapping[str, int] = {
    MIN_SCALE: 0,
    MAX_SCALE: 50,
    POLLING_INTERVAL: 10,
    COOLDOWN_PERIOD: 30,
    LAG_THRESHOLD: 100,
    ACTIVATION_LAG_THRESHOLD: 0,
}
"""eventing-kafka-broker's defaults (autoscaler_api.go) for keys an annotated resource omits."""


class ScalingError(ValueError):
    """A scaling annotation the dispatcher cannot act on."""

    status = 422


@dataclass(frozen=True)
class Scaling:
    """How many consumers a route runs; ``enabled`` False: always one (the unscaled default)."""

    enabled: bool = False
    min_scale: int = 0
    max_scale: int = 1
    polling_interval_s: float = 10.0
    cooldown_s: float = 30.0
    lag_threshold: int = 100
    activation_lag_threshold: int = 0


def parse_scaling(annotations: Mapping[str, Any] | None, where: str = "") -> Scaling:
    """A resource's ``autoscaling.eventing.knative.dev`` annotations → its scaling (pure)."""
    ann = {str(k): str(v) for k, v in (annotations or {}).items()}
    cls = ann.get(CLASS)
    if cls is None or cls == "disabled":
        return Scaling()
    if cls != KEDA_CLASS:
        raise ScalingError(f"{where}: {CLASS} {cls!r} is neither {KEDA_CLASS} nor disabled")
    values: dict[str, int] = {}
    for key, default in DEFAULTS.items():
        raw = ann.get(key)
        try:
            values[key] = default if raw is None else int(raw)
        except ValueError as e:
            raise ScalingError(f"{where}: {key} {raw!r} is not an integer") from e
    if values[LAG_THRESHOLD] < 1 or values[MAX_SCALE] < 1 or values[MIN_SCALE] < 0:
        raise ScalingError(f"{where}: lag-threshold and max-scale must be ≥ 1, min-scale ≥ 0")
    if values[MIN_SCALE] > values[MAX_SCALE]:
        raise ScalingError(f"{where}: min-scale is above max-scale")
    return Scaling(
        enabled=True,
        min_scale=values[MIN_SCALE],
        max_scale=values[MAX_SCALE],
        polling_interval_s=float(max(1, values[POLLING_INTERVAL])),
        cooldown_s=float(max(0, values[COOLDOWN_PERIOD])),
        lag_threshold=values[LAG_THRESHOLD],
        activation_lag_threshold=values[ACTIVATION_LAG_THRESHOLD],
    )


def consumer_count(lag: int, partitions: int, s: Scaling) -> int:
    """Consumers for ``lag`` records behind: ⌈lag / lag-threshold⌉ within [min, max], never
    more than the partitions (an extra consumer would idle), never fewer than one locally."""
    if not s.enabled:
        return 1
    ceiling = max(1, min(s.max_scale, partitions))
    want = math.ceil(lag / s.lag_threshold) if lag > s.activation_lag_threshold else 0
    floor = max(1, min(s.min_scale, ceiling))
    return max(floor, min(want, ceiling))


def share(items: Sequence[Any], index: int, count: int) -> list[Any]:
    """Consumer ``index`` of ``count``'s part of the route's partitions (round robin)."""
    return list(items[index::count])


def measure_lag(consumer: Any, partitions: Sequence[Any], initial_offset: str) -> int:
    """Records the route's group has not committed yet, over ``partitions``."""
    end = consumer.end_offsets(list(partitions))
    start = consumer.beginning_offsets(list(partitions))
    lag = 0
    for tp in partitions:
        committed = consumer.committed(tp)
        if committed is None:
            committed = start[tp] if initial_offset == "earliest" else end[tp]
        lag += max(0, end[tp] - committed)
    return lag


class Scaler(threading.Thread):
    """Re-sizes each scaled route every polling interval: up at once, down after cooldown."""

    def __init__(
        self,
        routes: Sequence[tuple[str, Scaling, Callable[[], tuple[int, int]], Callable[[int], None]]],
        stop: threading.Event,
        current: Callable[[str], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``routes``: (name, scaling, measure → (lag, partitions), rescale(n))."""
        super().__init__(name="scaler", daemon=True)
        self.routes, self.stop, self.current, self.clock = routes, stop, current, clock
        self.decisions: dict[str, dict[str, int]] = {}

    def step(
        self, name: str, s: Scaling, lag: int, partitions: int, low_since: float | None
    ) -> tuple[int | None, float | None]:
        """(new count or None, when the count first wanted to go down) for one poll."""
        want, have = consumer_count(lag, partitions, s), self.current(name)
        self.decisions[name] = {"lag": lag, "consumers": have, "wanted": want}
        now = self.clock()
        if want > have:
            return want, None
        if want < have:
            since = now if low_since is None else low_since
            return (want, None) if now - since >= s.cooldown_s else (None, since)
        return None, None

    def run(self) -> None:
        due = {name: 0.0 for name, *_ in self.routes}
        low: dict[str, float | None] = {name: None for name, *_ in self.routes}
        while not self.stop.is_set():
            for name, s, measure, rescale in self.routes:
                if self.clock() < due[name]:
                    continue
                due[name] = self.clock() + s.polling_interval_s
                try:
                    lag, partitions = measure()
                    new, low[name] = self.step(name, s, lag, partitions, low[name])
                    if new is not None:
                        log.info("route %s: %d consumers (lag %d)", name, new, lag)
                        rescale(new)
                except Exception:
                    log.exception("route %s: scaling check failed; keeping its consumers", name)
            self.stop.wait(0.5)
