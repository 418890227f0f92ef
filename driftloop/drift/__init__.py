"""Data drift: reference profiles, window summaries and per-feature verdicts.

See :mod:`driftloop.drift.detect` for the default statistics and thresholds and why
distances, not p-values, decide at large sample sizes.
"""

from driftloop.drift.detect import (
    CATEGORICAL_STATISTICS,
    DEFAULT_THRESHOLDS,
    NUMERIC_STATISTICS,
    P_VALUE_STATISTICS,
    DriftConfig,
    DriftResult,
    FeatureDrift,
    FeatureRule,
    detect,
    detect_summary,
    is_drifted,
)
from driftloop.drift.profile import (
    CategoricalProfile,
    CategoricalSketch,
    DriftInputError,
    NumericProfile,
    NumericSketch,
    ReferenceProfile,
    WindowSummary,
    build_profile,
    summarize,
)

__all__ = [
    "CATEGORICAL_STATISTICS",
    "DEFAULT_THRESHOLDS",
    "NUMERIC_STATISTICS",
    "P_VALUE_STATISTICS",
    "CategoricalProfile",
    "CategoricalSketch",
    "DriftConfig",
    "DriftInputError",
    "DriftResult",
    "FeatureDrift",
    "FeatureRule",
    "NumericProfile",
    "NumericSketch",
    "ReferenceProfile",
    "WindowSummary",
    "build_profile",
    "detect",
    "detect_summary",
    "is_drifted",
    "summarize",
]
