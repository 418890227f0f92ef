"""retrain-trigger and promote under functions-framework in the local stack."""

from __future__ import annotations

from dataclasses import replace

from driftloop.local.components import ComponentSpec
from driftloop.local.components.functions import function_spec
from driftloop.settings import Settings


def components(settings: Settings) -> list[ComponentSpec]:
    extra_env = {"DRIFTLOOP_PROMETHEUS_URL": settings.resolved_prometheus_url,
                 "DRIFTLOOP_SERVING_URL": settings.resolved_serving_url,
                 "DRIFTLOOP_POLICY_DIR": str(settings.policy_dir)}
    specs = []
    for name, target, port in (("retrain-trigger", "retrain_trigger", settings.retrain_port),
                               ("promote", "promote", settings.promote_port)):
        spec = function_spec(settings, name=name, target=target, port=port, order=50)
        specs.append(replace(spec, env={**spec.env, **extra_env}))
    return specs
