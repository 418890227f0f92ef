"""The factory of each function's service: ``Settings -> Service``, importing the service's
module only when called, so a function's ``main.py`` can name its factory at import time
and still answer health probes before the heavy modules (pydantic models, Kafka
clients, numpy) are loaded. Only typing imports here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from driftloop.function_service import Service
    from driftloop.settings import Settings


def feedback_intake(settings: Settings) -> Service:
    from driftloop.intake import IntakeService

    return IntakeService(settings)


def drift_check(settings: Settings) -> Service:
    from driftloop.monitoring.check import DriftCheckService

    return DriftCheckService(settings)


def retrain_trigger(settings: Settings) -> Service:
    from driftloop.retrain.trigger import RetrainTrigger

    return RetrainTrigger(settings)


def promote(settings: Settings) -> Service:
    from driftloop.promotion.service import PromotionService

    return PromotionService(settings)


__all__ = ["drift_check", "feedback_intake", "promote", "retrain_trigger"]
