"""Knative Eventing's delivery on a laptop, driven by the same ``eventing/`` files.

On a cluster, KafkaSources, PingSources and a Kafka-class Broker with Triggers deliver
CloudEvents to the functions. Locally the dispatcher reads those manifests and gives the
same semantics: binary-mode HTTP, at least once, per-partition order, retries with the
source's backoff, the dead-letter topic after the last retry, offsets committed only once
a record is done (delivered with a 2xx, filtered out, or dead-lettered).

- ``manifests``: manifests → routes and pings (pure)
- ``schedule``: PingSource cron schedules (pure)
- ``delivery``: record → HTTP request → reply, through ``driftloop.events``; retries
- ``worker``: the route consumers (a delivery lane per partition)
- ``pings``: the PingSource worker
- ``dispatcher``: runs and sizes the workers
- ``metrics``: the dispatcher's Prometheus metrics
- ``endpoints``: the stack's endpoints and the dispatcher's heartbeat file
- ``__main__``: the process ``driftloop up`` starts
"""

__all__: list[str] = []
