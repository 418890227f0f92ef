"""The Kubernetes API client, configured in-cluster or from the local kubeconfig.

Imported only by the parts that talk to a cluster (training Jobs, Seldon Experiments),
so the ``kubernetes`` package stays optional.
"""

from __future__ import annotations

from typing import Any

from driftloop.errors import Unavailable


def kube_client(purpose: str) -> Any:
    """The ``kubernetes.client`` module, configured; ``Unavailable`` without the package."""
    try:
        from kubernetes import client, config
    except ImportError as e:
        raise Unavailable(f"{purpose} needs the 'kubernetes' package") from e
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client
