"""Promotion: the offline gate, canary routing, the metric-guarded bake, promotion and
rollback, and an optional Thompson-sampling bandit over versions."""
