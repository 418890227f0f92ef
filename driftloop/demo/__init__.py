"""``driftloop demo``: the loop end to end on the embedded defaults, one module per step.

- ``context``: ``DemoContext`` (settings, console, the stack's endpoints, the summary),
  what every step takes;
- the steps, in the order ``runner.STEPS`` runs them: ``feedback`` (apps post feedback),
  ``preprocess`` (raw inputs through Flink), ``predictions`` (each model family over V2),
  ``labeled`` (Flink's join), ``loop`` (drift → retrain → canary → promotion, with
  ``traffic`` playing the app) and ``drift`` (an injected shift, the alert, the report);
- ``runner``: brings the stack up, runs the steps, prints the summary.

The package imports nothing here, so a step's import never runs the runner; steps import
``context`` and the library, never each other's step or the CLI layer.
"""

__all__: list[str] = []
