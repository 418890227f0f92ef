"""driftloop: the closed loop around models in production."""

__version__ = "0.1.0"
