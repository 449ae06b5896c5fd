"""The service as an in-process ASGI app, for tests that call it without a server."""

from __future__ import annotations


def service_app():
    """A fresh ASGI app of the autopdm service.

    BentoML registers its request metrics in prometheus_client's process-wide registry when an app
    first starts; a second app in the same pytest process would raise DuplicateTimeseries. Each app
    here gets the registry without BentoML's previous collectors."""
    import prometheus_client

    from autopdm.serving.service import Autopdm  # bentoml: imported by the tests that serve

    registry = prometheus_client.REGISTRY
    for collector, names in list(registry._collector_to_names.items()):
        if any(n.startswith("bentoml_") for n in names):
            registry.unregister(collector)
    return Autopdm.to_asgi()
