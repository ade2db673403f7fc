"""Operating the running system: Prometheus metrics (:mod:`.metrics`) and the
OpenAPI document of the REST API (:mod:`.openapi`).

Kept apart from the daemons' logic so that instrumentation is a line or two at
each measured place and everything else (registries, the scrape listener, the
document generator) lives here.
"""
