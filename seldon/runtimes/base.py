"""What every driftloop runtime does around its model.

Metrics go to prometheus_client's default registry, which MLServer serves on its
metrics port when inference runs in the server process (``parallel_workers: 0``).

Load: the artifact of one registry version (``parameters.extra.registry_version``)
from the blob store. Predict: decode the one input, run the model off the event loop,
count latency, errors and outputs per model and version, answer with the prediction id
in the body and the ``x-request-id``/``ce-id`` headers, offer the input to the payload
logger (kept in the blob store when the model's policy says so) and a prediction event
carrying its ``input_ref`` to the emitter (written to its spool on disk, then queued for
Kafka, so a killed server's answers are resent by the next start); neither Kafka nor the
blob store can fail or hold up the inference.

Each loaded model runs inferences in its own few threads (``serving_model_threads``)
under its own time limit (``serving_inference_timeout_s``/``serving_model_timeouts``):
a model busy with costly inputs answers 504 for them, the other models are unaffected.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput
from prometheus_client import REGISTRY, Counter, Histogram

from driftloop import events
from driftloop.blob import open_store
from driftloop.catalogue import FAMILIES
from driftloop.errors import DriftloopError, InferenceTimeout
from driftloop.promotion.routing import canary_point
from driftloop.promotion.shadow_worker import ShadowProcess
from driftloop.registry import DEPLOY_SETTINGS, Registry
from driftloop.serving import models, v2
from driftloop.serving.emitter import PredictionEmitter
from driftloop.serving.inputs import InputLimits
from driftloop.serving.payload_writer import writer_env
from driftloop.serving.payloads import LoggingPolicies, PayloadLogger
from driftloop.settings import Settings

LATENCY = Histogram(
    "driftloop_model_latency_seconds", "Model inference latency (decode + predict).",
    ["model", "version"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REQUESTS = Counter("driftloop_model_requests", "Inference requests by outcome.",
                   ["model", "version", "outcome"], registry=REGISTRY)
ERRORS = Counter("driftloop_model_errors", "Failed inferences by reason (HTTP status).",
                 ["model", "version", "status"], registry=REGISTRY)
OUTPUTS = Counter("driftloop_model_outputs", "Output distribution: predictions by class.",
                  ["model", "version", "output"], registry=REGISTRY)
SHADOW_DROPPED = Counter("driftloop_shadow_dropped", "Mirrored requests not run because "
                         "the shadow was behind or down.", ["model", "version"],
                         registry=REGISTRY)
SHADOW_DEFER_S = 0.002
"""How long after the champion's answer its mirrored copy is handed to the shadow."""
BANDIT_REFRESH_S = 1.0
"""How often a bandit's challenger share is re-read from the registry (no reload)."""
CONFIDENCE = Histogram("driftloop_model_confidence", "Confidence of each prediction.",
                       ["model", "version"], registry=REGISTRY,
                       buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0))

_emitter: PredictionEmitter | None = None
_emitter_lock = threading.Lock()
_payloads: tuple[PayloadLogger, LoggingPolicies] | None = None


def emitter(settings: Settings) -> PredictionEmitter:
    """The process's one emitter (shared by every model and version)."""
    global _emitter
    with _emitter_lock:
        if _emitter is None:
            from driftloop.bus import make_producer
            from driftloop.serving.spool import from_settings

            # The spool first: what a killed earlier server left is resent from it.
            _emitter = PredictionEmitter(lambda: make_producer(settings, linger_ms=20),
                                         maxsize=settings.serving_event_queue, registry=REGISTRY,
                                         spool=from_settings(settings))
            # On a clean shutdown, queued events get a few seconds to reach Kafka (the rest
            # stays in the spool).
            atexit.register(_emitter.close, 5.0)
        return _emitter


def payload_logger(settings: Settings) -> tuple[PayloadLogger, LoggingPolicies]:
    """The process's one payload logger and the models' logging policies."""
    global _payloads
    with _emitter_lock:
        if _payloads is None:
            # Writes go through a child process: none shares this interpreter with requests.
            logger = PayloadLogger(writer_env=writer_env(settings, os.environ),
                                   registry=REGISTRY)
            _payloads = (logger, LoggingPolicies(settings.policy_dir))
            atexit.register(logger.close, 5.0)
        return _payloads


def output_class(family: str, output: dict[str, Any]) -> str:
    """A low-cardinality label for the output distribution metric."""
    if "label" in output:
        return str(output["label"])
    if "labels" in output and family == "digits":
        return "batch"
    if "boxes" in output and "text" not in output:
        n = len(output["boxes"])
        return str(n) if n < 3 else "3+"
    return "text" if output.get("text") else "empty"


class DriftloopRuntime(MLModel):
    """Base runtime; subclasses name their ``family`` (``driftloop.catalogue``)."""

    family: ClassVar[str] = ""

    async def load(self) -> bool:
        self._dl_settings = Settings()  # MLServer loads the runtime: an edge
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        self.registry_version = str(extra.get("registry_version") or self.version or "")
        if not self.registry_version:
            raise MLServerError(f"{self.name}: no registry_version to load", status_code=500)
        artifact = await asyncio.to_thread(self._artifact)
        self._timeout_s = self._dl_settings.serving_timeout_for(self.family)
        limits = InputLimits.from_settings(self._dl_settings, timeout_s=self._timeout_s)
        self._executor = ThreadPoolExecutor(self._dl_settings.serving_model_threads,
                                            thread_name_prefix=f"driftloop-{self.family}")
        self._model = await asyncio.to_thread(models.load, self.family, artifact,
                                              limits=limits)
        self._canary: tuple[str, models.Model, float] | None = None
        self._shadow: ShadowProcess | None = None
        self._stop = threading.Event()
        challenger = extra.get("challenger_version")
        weight = int(extra.get("challenger_weight") or 0)
        mode = str(extra.get("challenger_mode") or "canary")
        if challenger and mode == "shadow":
            self._start_shadow(str(challenger))
        elif challenger and (weight > 0 or mode == "bandit"):
            store = open_store(self._dl_settings.resolved_blob_url, self._dl_settings)
            c_artifact = await asyncio.to_thread(Registry(store).artifact, self.family,
                                                 str(challenger))
            c_model = await asyncio.to_thread(models.load, self.family, c_artifact,
                                              limits=limits)
            self._canary = (str(challenger), c_model, weight / 100.0)
            if mode == "bandit":
                threading.Thread(target=self._follow_bandit, args=(Registry(store),),
                                 daemon=True, name=f"bandit-{self.family}").start()
        self._emitter = emitter(self._dl_settings)
        self._payloads, self._policies = payload_logger(self._dl_settings)
        return True

    async def unload(self) -> bool:
        # Running and queued inferences finish in their threads (a reload on promotion
        # must not fail the requests in flight); nothing new is queued.
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=False)
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        shadow = getattr(self, "_shadow", None)
        if shadow is not None:
            shadow.close()
        return True

    def _follow_bandit(self, registry: Registry) -> None:
        """Bandit: re-read the challenger's share every second, so the weights the promote
        function derives from rewards steer traffic within seconds and without a reload."""
        while not self._stop.wait(BANDIT_REFRESH_S):
            try:
                share = registry.challenger_weight(self.family) / 100.0
            except Exception:
                continue  # the store unreachable: keep the last share
            canary = self._canary
            if canary is not None and canary[2] != share:
                self._canary = (canary[0], canary[1], share)

    def _start_shadow(self, version: str) -> None:
        """Shadow: the challenger answers mirrored requests in a child process at the
        lowest CPU priority (``shadow_worker``), fed after the champion answered, through
        a bounded queue; nothing of it runs in this interpreter's request path."""
        labels = {"model": self.family, "version": version}

        def answered(latency_s: float) -> None:
            LATENCY.labels(**labels).observe(latency_s)
            REQUESTS.labels(**labels, outcome="ok").inc()

        def failed(status: str) -> None:
            REQUESTS.labels(**labels, outcome="error").inc()
            ERRORS.labels(**labels, status=status).inc()

        self._shadow = ShadowProcess(
            self.family, version, writer_env(self._dl_settings, os.environ),
            loop=asyncio.get_running_loop(), on_answer=answered, on_error=failed,
            on_dropped=SHADOW_DROPPED.labels(**labels).inc)

    def _mirror(self, pid: str, media: bytes | None, tensor: Any) -> None:
        """Hand the request to the shadow; never waits for it, never fails the answer.

        Written to the shadow's pipe a moment after this answer went out: the write wakes
        the shadow's process, which must not preempt the champion's reply on its way."""
        if self._shadow is not None:
            asyncio.get_running_loop().call_later(
                SHADOW_DEFER_S, self._shadow.offer, pid, media, tensor)

    async def _run(self, model: models.Model, media: bytes | None, tensor: Any) -> dict[str, Any]:
        """``model.predict`` in this model's threads, within its time limit."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, model.predict, media, tensor)
        try:
            return await asyncio.wait_for(future, self._timeout_s)
        except TimeoutError as e:
            raise InferenceTimeout(f"inference took longer than the limit of "
                                   f"{self._timeout_s:g} s") from e

    def _pick(self, request_id: str) -> tuple[str, models.Model]:
        """The version that answers this request: the challenger for its canary share.

        The split hashes the request id, so a retried request lands on the same version
        and the share matches the weight over many requests.
        """
        if self._canary is not None and canary_point(request_id) < self._canary[2]:
            return self._canary[0], self._canary[1]
        return self.registry_version, self._model

    def _artifact(self) -> dict[str, bytes]:
        """From the folder Seldon Core v2 / KServe downloaded, else from the registry."""
        uri = self.settings.parameters.uri if self.settings.parameters else None
        if uri and os.path.isabs(uri) and os.path.isdir(uri):
            folder = Path(uri)
            return {p.name: p.read_bytes() for p in folder.iterdir()
                    if p.is_file() and p.name != DEPLOY_SETTINGS}
        store = open_store(self._dl_settings.resolved_blob_url, self._dl_settings)
        return Registry(store).artifact(self.family, self.registry_version)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        headers = (payload.parameters.headers if payload.parameters else None) or {}
        try:
            pid = v2.request_id(headers, payload.id)
        except DriftloopError as e:
            self._count_rejected({"model": self.family, "version": self.registry_version}, e)
            raise MLServerError(f"{self.family}: {e.message}", status_code=e.status) from e
        payload.id = pid
        version, model = self._pick(pid)
        # Labels and events name the model family: on Seldon Core v2 the server-side name
        # is the Model resource's (``digits-2``), not the model's.
        labels = {"model": self.family, "version": version}
        start = time.perf_counter()
        try:
            media, tensor = v2.decode_input(
                [i.model_dump() for i in payload.inputs],
                max_bytes=self._dl_settings.serving_max_input_bytes,
            )
            output = await self._run(model, media, tensor)
        except DriftloopError as e:
            self._count_rejected(labels, e)
            raise MLServerError(f"{self.family}: {e.message}", status_code=e.status) from e
        except Exception as e:
            REQUESTS.labels(**labels, outcome="error").inc()
            ERRORS.labels(**labels, status="500").inc()
            raise MLServerError(f"{self.name}: inference failed ({type(e).__name__}: {e})",
                                status_code=500) from e
        latency = time.perf_counter() - start
        LATENCY.labels(**labels).observe(latency)
        REQUESTS.labels(**labels, outcome="ok").inc()
        OUTPUTS.labels(**labels, output=output_class(self.family, output)).inc()
        if isinstance(output.get("confidence"), int | float):
            CONFIDENCE.labels(**labels).observe(float(output["confidence"]))
        if headers.get(v2.EMIT_HEADER, "on").lower() not in ("off", "false", "0"):
            self._emit(pid, version, output, latency, media, tensor)
            self._mirror(pid, media, tensor)
        return InferenceResponse(
            id=pid,
            model_name=self.name,
            model_version=version,
            outputs=[ResponseOutput(**o) for o in v2.encode_outputs(output)],
            parameters=Parameters(headers={
                "x-request-id": pid, "ce-id": pid, v2.VERSION_HEADER: version,
            }),
        )

    @staticmethod
    def _count_rejected(labels: dict[str, str], e: DriftloopError) -> None:
        REQUESTS.labels(**labels, outcome="rejected" if e.status < 500 else "error").inc()
        ERRORS.labels(**labels, status=str(e.status)).inc()

    def _emit(self, pid: str, version: str, output: dict[str, Any], latency: float,
              media: bytes | None, tensor: Any) -> None:
        spec = FAMILIES.get(self.family)
        data: dict[str, Any] = {
            "model": self.family, "version": version, "output": output,
            "latency_ms": round(latency * 1000.0, 3),
            "modality": spec.modality if spec else None,
        }
        # The input reference is the key the server itself gives the input: never from the
        # request (a client could point training at any blob).
        ref = self._payloads.offer(self.family, pid, self._policies.for_model(self.family),
                                   media=media, tensor=tensor)
        if ref is not None:
            data["input_ref"] = ref
        event = events.new_event(events.PREDICTION, f"driftloop/serving/{self.family}",
                                 events.PredictionData.parse(data),
                                 id=pid, model=self.family)
        self._emitter.offer(event, key=self.family)
