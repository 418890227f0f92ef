"""The steps a promotion takes outside its own records: the offline gate, the canary's
traffic split (and the bandit's reweighting), writing routing where the serving side
reads it, and asking the model server to reload.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from driftloop.blob import BlobStore
from driftloop.errors import DriftloopError, NotFound, Unavailable
from driftloop.policy import Policy
from driftloop.promotion import routing
from driftloop.promotion.gate import GateResult, run_gate
from driftloop.promotion.rewards import state_key
from driftloop.registry import Registry
from driftloop.settings import Settings

log = logging.getLogger("driftloop.promotion")


class PromotionSteps:
    """Gate, routing and reload against one registry, blob store and model server."""

    def __init__(self, settings: Settings, store: BlobStore, registry: Registry) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry

    def _artifact(self, model: str, version: str) -> tuple[dict[str, bytes] | None, str | None]:
        """The artifact, or None with what is wrong (the store unreachable is an error)."""
        try:
            return self.registry.artifact(model, version), None
        except Unavailable:
            raise
        except Exception as e:
            what = "missing" if isinstance(e, KeyError | NotFound) else "unreadable"
            return None, f"v{version}'s artifact is {what} ({type(e).__name__}: {e})"[:300]

    def gate(self, policy: Policy, model: str, version: str, champion: str) -> GateResult:
        """The offline gate: challenger against champion on the holdout and recent data."""
        from driftloop.retrain.pipeline import load_eval_set
        from driftloop.retrain.trainers import trainer_for

        trainer = trainer_for(model)
        _, holdout = trainer.base()
        recent = load_eval_set(
            self.store, trainer, self.registry.get(model, version).lineage.get("eval_set")
        )
        challenger, challenger_problem = self._artifact(model, version)
        current, champion_problem = self._artifact(model, champion)
        if champion_problem is not None:
            champion_problem = f"champion {champion_problem}"
        return run_gate(
            policy,
            challenger,
            current,
            holdout,
            recent,
            trainer,
            champion_problem=champion_problem,
            challenger_problem=challenger_problem,
        )

    def start_canary(self, policy: Policy, model: str, version: str, champion: str) -> None:
        """The challenger takes its share: fixed (canary) or, in bandit mode, the canary
        share to start with and then what its rewards earn (``set_bandit_weights``)."""
        self.registry.set_alias(model, "challenger", version, reason=policy.promotion.mode)
        w = policy.promotion.canary_weight
        r = routing.canary(model, champion, version, w)
        if policy.promotion.mode == "bandit":
            r = replace(r, mode="bandit")
            self.store.delete(state_key(model, version))  # a fresh bandit
        self.apply_routing(policy, r)
        log.info("%s v%s %s at %.0f%% against v%s", model, version, r.mode, w * 100, champion)

    def start_shadow(self, policy: Policy, model: str, version: str, champion: str) -> None:
        """The challenger answers mirrored copies of every request; nobody sees them."""
        self.registry.set_alias(model, "challenger", version, reason="shadow")
        self.apply_routing(policy, routing.shadow(model, champion, version))
        log.info("%s v%s in shadow of v%s", model, version, champion)

    def set_bandit_weights(self, policy: Policy, r: routing.Routing) -> None:
        """New bandit weights: written where the server re-reads them each second; no
        reload (the versions it holds do not change)."""
        self.apply_routing(policy, r, reload=False)

    def apply_routing(self, policy: Policy, r: routing.Routing, *, reload: bool = True) -> None:
        """Write the weights where the serving side reads them, then reload the server."""
        if policy.promotion.routing == "seldon":
            self._apply_experiment(r)
        routing.save(self.store, r)
        mode = r.mode if r.mode in ("bandit", "shadow") else "canary"
        self.registry.set_challenger_weight(r.model, routing.challenger_share(r), mode=mode)
        if reload:
            self.reload(r.model)

    def _apply_experiment(self, r: routing.Routing) -> None:
        from driftloop.kube import kube_client

        client = kube_client("seldon routing")
        body = routing.experiment_manifest(r.model, r, namespace=self.settings.k8s_namespace)
        api = client.CustomObjectsApi()
        args = ("mlops.seldon.io", "v1alpha1", self.settings.k8s_namespace, "experiments")
        try:
            api.patch_namespaced_custom_object(*args, body["metadata"]["name"], body)
        except client.exceptions.ApiException as e:
            if e.status != 404:
                raise
            api.create_namespaced_custom_object(*args, body)

    def reload(self, model: str) -> bool:
        """Ask the model server to re-read the registry (best effort: it also re-reads at start)."""
        import httpx

        from driftloop.serving.client import V2Client

        try:
            with V2Client(self.settings.resolved_serving_url, timeout_s=60) as c:
                c.load(model)
            return True
        except (DriftloopError, httpx.HTTPError) as e:
            log.warning("model server did not reload %s: %s", model, e)
            return False


__all__ = ["PromotionSteps"]
