"""Monitoring: drift and quality metrics to the Pushgateway, Prometheus queries, reports.

Metric names drift-check pushes (job ``driftloop-drift-check``, grouped by ``model``)
are listed in :mod:`driftloop.monitoring.metrics`.
"""
