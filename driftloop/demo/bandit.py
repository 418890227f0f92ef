"""The demo's bandit step: reward-driven serving over the two digits versions the loop left.

After the loop the promoted version is the champion and the old champion is still in the
registry. This step puts the old one back in front of traffic as a challenger under
``promotion.mode: bandit`` - for this step only: a copy of the digits policy with the mode
switched, in the demo's state dir, read by a promotion service of its own - and sends
rotated digits over V2 REST, each answer rewarded 1/0 from the known truth through
``driftloop.client`` feedback. Thompson sampling moves the traffic towards the version
that earns the rewards; the decision names P(best) per version.

What it leaves: the champion the loop left (the bandit keeps it when it wins; were the old
version to win, it would be promoted - the table says which), no challenger, all traffic
to the champion, and one more finished promotion record (the old version's bandit).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from driftloop.blob import open_store
from driftloop.demo.context import DemoContext
from driftloop.demo.traffic import MODEL, digit_samples
from driftloop.registry import Registry
from driftloop.settings import Settings

if TYPE_CHECKING:
    from driftloop.promotion.service import PromotionService

__all__ = ["BanditReport", "await_bandit_turn", "bandit_policy", "run_bandit", "step_bandit"]

Progress = Callable[[str], None]
FINAL = ("promoted", "rolledback", "rejected", "abandoned")

BANDIT: dict[str, Any] = {
    "reward": "binary",
    "floor": 0.1,
    "threshold": 0.95,
    "min_rewards": 10,
    "refresh_s": 0.5,
    "max_s": 45,
}
"""Short enough for a demo: a winner after 10 rewards per version (the loser keeps a tenth
of the traffic, so it earns them within a few rounds), none within 45 s rolls the
challenger back."""


@dataclass
class BanditReport:
    """One bandit run: versions, the traffic split per round, the decision."""

    champion: str
    challenger: str
    phase: str = ""
    reason: str = ""
    rounds: list[dict[str, Any]] = field(default_factory=list)
    """Per round: ``served`` (requests per version), ``weights`` (routing after it)."""
    rewards: dict[str, tuple[float, int]] = field(default_factory=dict)
    seconds: float = 0.0
    champion_after: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "champion": self.champion,
            "challenger": self.challenger,
            "phase": self.phase,
            "reason": self.reason,
            "rounds": self.rounds,
            "rewards": {v: {"mean": m, "n": n} for v, (m, n) in self.rewards.items()},
            "seconds": self.seconds,
            "champion_after": self.champion_after,
        }


def _noop(msg: str) -> None:
    pass


def bandit_policy(policy_dir: Path, folder: Path) -> Path:
    """A copy of the digits policy with ``promotion.mode: bandit`` (and a gate that lets the
    old version through: the rewards judge it live), written to ``folder``."""
    doc = yaml.safe_load((policy_dir / f"{MODEL}.yaml").read_text())
    promotion = doc.setdefault("promotion", {})
    promotion.pop("shadow", None)
    promotion.update(
        mode="bandit",
        bandit=dict(BANDIT),
        margin=-1.0,
        max_holdout_drop=1.0,
        canary_weight=0.3,
        poll_s=0.5,
        min_canary_samples=0,
        min_latency_requests=5,
        max_latency_ratio=50.0,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{MODEL}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def run_bandit(
    settings: Settings,
    *,
    challenger: str | None,
    intake_url: str,
    progress: Progress = _noop,
    timeout_s: float = 60.0,
    batch: int = 10,
    turn_timeout_s: float = 5.0,
) -> BanditReport:
    """The old version against the champion under ``mode: bandit`` until the bandit decides
    (or ``timeout_s``); rewards from the truth of rotated digits. Each round waits for the
    bandit's turn on its rewards (``await_bandit_turn``), so the weights shown after a round
    are the ones its rewards moved."""
    from driftloop import quality
    from driftloop.demo.traffic import Traffic
    from driftloop.promotion import routing
    from driftloop.promotion.service import PromotionService

    store = open_store(settings.resolved_blob_url, settings)
    registry = Registry(store)
    champion = registry.alias(MODEL, "champion") or ""
    if challenger is None or challenger == champion:
        others = [v for v in registry.versions(MODEL) if v != champion]
        challenger = others[-1] if others else ""
    report = BanditReport(champion=champion, challenger=challenger)
    if not challenger:
        report.phase, report.reason = "skipped", "only one digits version"
        return report
    folder = bandit_policy(settings.policy_dir, settings.state_dir / "demo-bandit" / "policies")
    svc = PromotionService(settings.model_copy(update={"policy_dir": folder}), store=store)
    traffic = Traffic(settings, settings.resolved_serving_url, intake_url=intake_url, store=store)
    rewards: dict[str, list[float]] = {}
    t0 = time.monotonic()
    try:
        progress(f"v{challenger} back as a challenger of v{champion}, promotion.mode: bandit")
        answer = svc.start(MODEL, challenger)
        if answer.get("phase") != "canary":
            report.phase = str(answer.get("phase"))
            report.reason = str(answer.get("reason") or answer.get("gate") or "")
            return report
        samples = digit_samples(3000, rotate=True, seed=21)
        i = 0
        while time.monotonic() - t0 < timeout_s:
            p = svc.state(MODEL, challenger)
            if p is not None and p.phase in FINAL:
                break
            served: dict[str, int] = {}
            items = []
            for pixels, label in samples[i % 2900 :][:batch]:
                pred = traffic.client.predict(MODEL, [pixels])
                v = str(pred.version)
                reward = float(quality.score(MODEL, dict(pred.output), {"label": label}))
                served[v] = served.get(v, 0) + 1
                rewards.setdefault(v, []).append(reward)
                items.append(traffic.client.make_feedback(pred, reward=reward))
            i += batch
            result = traffic.client.feedback_batch(items)
            if result.rejected:
                raise RuntimeError(f"feedback-intake refused {len(result.rejected)} rewards")
            await_bandit_turn(svc, challenger, timeout_s=turn_timeout_s)
            r = routing.load(store, MODEL)
            weights = dict(r.weights) if r is not None else {}
            report.rounds.append({"served": served, "weights": weights})
            if len(report.rounds) % 5 == 1:
                split = ", ".join(f"v{v} {w:.0%}" for v, w in sorted(weights.items()))
                progress(f"round {len(report.rounds)}: weights {split or 'champion only'}")
        p = svc.state(MODEL, challenger)
        report.phase = p.phase if p else "unknown"
        report.reason = p.reason if p else ""
        if report.phase not in FINAL:
            # Out of time: the challenger goes, the champion keeps all traffic.
            svc.rollback(MODEL, version=challenger, reason="demo bandit step out of time")
            p = svc.state(MODEL, challenger)
            report.phase = p.phase if p else "unknown"
            report.reason = f"out of time after {timeout_s:g} s; {report.reason}"
        return report
    finally:
        report.seconds = time.monotonic() - t0
        report.rewards = {v: (sum(rs) / len(rs), len(rs)) for v, rs in rewards.items()}
        report.champion_after = registry.alias(MODEL, "champion")
        traffic.close()
        svc.close()


def await_bandit_turn(svc: PromotionService, challenger: str, *, timeout_s: float) -> bool:
    """Wait until the bandit has noted two more verdicts: the second turn began after this
    round's rewards were acknowledged, so it read them, and it writes its weights before
    its verdict, so the routing read next shows what they did. True when it happened, False
    when the promotion ended or ``timeout_s`` passed first (a slow bandit makes a round
    longer, it never fails the demo)."""
    deadline = time.monotonic() + timeout_s
    seen: list[dict[str, Any] | None] = []
    while time.monotonic() < deadline:
        p = svc.state(MODEL, challenger)
        if p is None or p.phase in FINAL:
            return False
        verdicts = svc.verdicts(MODEL, challenger)
        last = verdicts[-1] if verdicts else None
        if not seen or last != seen[-1]:
            seen.append(last)
            if len(seen) > 2:
                return True
        time.sleep(0.05)
    return False


def step_bandit(ctx: DemoContext) -> None:
    """Reward-driven serving: the two digits versions under Thompson sampling."""
    from rich.table import Table

    from driftloop.demo.loop import stack_settings

    if "feedback-intake" not in ctx.endpoints:
        ctx.console.print("no feedback-intake in this stack: the bandit step is skipped")
        return
    loop = ctx.summary.get("loop") or {}
    with ctx.console.status("bandit") as spinner:

        def progress(message: str) -> None:
            spinner.update(message)
            ctx.console.log(message)

        report = run_bandit(
            stack_settings(ctx),
            challenger=loop.get("champion_before"),
            intake_url=ctx.endpoints["feedback-intake"],
            progress=progress,
        )
    table = Table("round", "served", "weights after")
    for n, r in enumerate(report.rounds, 1):
        if n % 3 != 1 and n != len(report.rounds):
            continue
        table.add_row(
            str(n),
            ", ".join(f"v{v}: {k}" for v, k in sorted(r["served"].items())),
            ", ".join(f"v{v} {w:.0%}" for v, w in sorted(r["weights"].items()))
            or f"all to v{report.champion_after}",
        )
    ctx.console.print(table)
    for v, (mean, n) in sorted(report.rewards.items()):
        ctx.console.print(f"v{v}: mean reward {mean:.3f} over {n} answers")
    ctx.console.print(f"decision ({report.phase}, {report.seconds:.1f} s): {report.reason}")
    ctx.console.print(f"champion after the bandit: v{report.champion_after}")
    ctx.summary["bandit"] = report.to_dict()
