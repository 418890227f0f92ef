"""Runs the demo: brings the local stack up (or uses the running one), then each step of
``STEPS`` in order, then one summary table of what flowed where."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from driftloop.catalogue import family
from driftloop.demo.bandit import step_bandit
from driftloop.demo.context import DemoContext, Step
from driftloop.demo.drift import step_drift
from driftloop.demo.estimated import beside
from driftloop.demo.feedback import step_feedback
from driftloop.demo.labeled import step_labeled
from driftloop.demo.loop import step_loop
from driftloop.demo.predictions import step_predictions
from driftloop.demo.preprocess import step_preprocess
from driftloop.settings import Settings

__all__ = ["STEPS", "print_summary", "run"]

STEPS: tuple[Step, ...] = (
    step_feedback,
    step_preprocess,
    step_predictions,
    step_labeled,
    # The loop runs before the drift-alert step: that step's alert also reaches
    # retrain-trigger, and the policy's cooldown would then hold the loop's trigger back.
    step_loop,
    # After the loop: its two digits versions under mode: bandit (a policy copy of its own).
    step_bandit,
    step_drift,
)


def _split(weights: dict[str, float]) -> str:
    return ", ".join(f"v{v} {w:.0%}" for v, w in sorted(weights.items())) or "champion only"


def print_summary(ctx: DemoContext) -> None:
    """What flowed where, in one table at the end."""
    s = ctx.summary
    table = Table("step", "result")
    if fb := s.get("feedback"):
        table.add_row(
            "feedback",
            f"{fb['accepted']}/{fb['posted']} accepted, "
            f"{fb['kafka']} in Kafka, {fb['archived']} archived",
        )
    if pre := s.get("preprocess"):
        table.add_row(
            "preprocess", f"{pre['inputs']} raw inputs preprocessed by Flink in {pre['seconds']} s"
        )
    for p in s.get("predictions", []):
        metric = family(p["model"]).metric
        table.add_row(
            f"predict {p['model']}",
            f"v{p['version']} {metric} {p['quality']:.3f}, feedback {p['feedback_status']}",
        )
    if lab := s.get("labeled"):
        table.add_row("join", f"{lab['joined']}/{lab['expected']} predictions labeled")
    if loop := s.get("loop"):
        q = loop.get("quality") or {}
        accuracy = ", ".join(f"{k} {v:.3f}" for k, v in q.items() if isinstance(v, float))
        timings = ", ".join(
            f"{k} {v:.1f}" for k, v in (loop.get("timings") or {}).items() if isinstance(v, float)
        )
        table.add_row(
            "loop",
            f"v{loop.get('champion_before')} → v{loop.get('new_version')} "
            f"({loop.get('phase')}); accuracy {accuracy}; seconds: {timings}",
        )
        for window in ("before", "drifted", "after"):
            if window in (loop.get("realized") or {}):
                table.add_row(
                    f"accuracy {window}",
                    beside(loop["realized"][window], (loop.get("estimated") or {}).get(window, {})),
                )
        c = loop.get("counts") or {}
        if loop.get("labels_from") == "join":
            table.add_row(
                "retrained from",
                f"{c.get('predictions', 0)} predictions over REST, "
                f"{c.get('feedback', 0)} feedback, {c.get('labeled_with_input_ref', 0)} "
                f"labeled by the join with input_ref → n_feedback_train "
                f"{c.get('n_feedback_train', '-')} (+{c.get('n_recent', '-')} recent)",
            )
        elif c:
            table.add_row(
                "retrained from",
                f"labeled records written by the app (no Flink join): n_feedback_train "
                f"{c.get('n_feedback_train', '-')}",
            )
    if (b := s.get("bandit")) and b.get("rounds"):
        moved = [r["weights"] for r in b["rounds"] if r["weights"]] or [{}]
        end = "" if b["rounds"][-1]["weights"] else f", then all to v{b['champion_after']}"
        table.add_row(
            "bandit",
            f"v{b['challenger']} vs v{b['champion']}: weights "
            f"{_split(moved[0])} → {_split(moved[-1])}{end} in {b['seconds']:.0f} s; "
            f"{b['phase']}: {b['reason'][:160]}",
        )
    if drift := s.get("drift"):
        table.add_row(
            "drift alert",
            f"{drift['model']} share drifted "
            f"{drift['share_before']:.0%} → {drift['share_after']:.0%}, alert "
            f"{drift['alert']}, report {drift['report']}",
        )
    ctx.console.rule("summary")
    ctx.console.print(table)


def run(settings: Settings, console: Console) -> dict[str, Any]:
    """Every step on the running (or freshly started) local stack; the summary's figures."""
    from driftloop.local.stack import Stack

    stack = Stack(settings)
    if not stack.running():
        with console.status("starting the local stack") as spinner:
            stack.up(progress=lambda msg: spinner.update(msg))
    statuses = stack.status()
    unhealthy = [s.name for s in statuses if not s.healthy]
    if unhealthy:
        raise RuntimeError(
            f"unhealthy components: {', '.join(unhealthy)} (logs in {stack.log_dir})"
        )
    ctx = DemoContext(settings, console, {s.name: s.endpoint for s in statuses})
    for step in STEPS:
        console.rule(step.__doc__.splitlines()[0] if step.__doc__ else step.__name__)
        step(ctx)
    print_summary(ctx)
    return ctx.summary
