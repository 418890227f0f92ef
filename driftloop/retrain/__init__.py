"""Retraining: the run-state store, training backends, the training pipeline and the
retrain-trigger service that applies ``driftloop.policy`` to incoming events."""
