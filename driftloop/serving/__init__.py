"""Model serving: V2 client, prediction events, the in-process models, streaming and batch.

The MLServer runtimes in ``seldon/runtimes`` wrap the models in ``driftloop.serving.models``;
the same model objects run in-process for the benchmark and the trainers.
"""
