"""Prometheus metrics of one gateway (prometheus-client), at GET /metrics for an operator key.

Requests by route template and status, and their latency, are counted as they pass (an ASGI
middleware). What a scrape reads now: the chain outbox's depth and its oldest pending row's age,
how old the chain's head is, and how long ago each log was last anchored. Only counts and ages: no
member, key or reference is ever a label. With several uvicorn workers, set PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode) so that every worker's counts are summed."""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select

from .db import as_utc, reading
from .models import Exchange, LogAnchor, Redemption
from .runtime import Gateway

log = logging.getLogger("gateway")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, gw: Gateway):
        self.registry = CollectorRegistry()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            MultiProcessCollector(self.registry)
            own = None  # counted in the shared directory, collected from there
        else:
            own = self.registry
        self.requests = Counter("gateway_requests", "HTTP requests answered", ["method", "route", "status"], registry=own)
        self.latency = Histogram("gateway_request_seconds", "time to answer an HTTP request", ["method", "route"],
                                 buckets=LATENCY_BUCKETS, registry=own)
        self.registry.register(_StateCollector(gw))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: each HTTP request's status and duration, labelled by its route's template
    (`/v1/me/exchanges/{exchange_ref}`, never the path itself: no reference becomes a label)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - started)


class _StateCollector:
    """Read at each scrape from the database and the chain (a failed read leaves its metric out)."""

    def __init__(self, gw: Gateway):
        self.gw = gw

    def collect(self):
        now = self.gw.now()
        depth = GaugeMetricFamily("gateway_outbox_pending", "chain operations waiting for the chain", labels=["kind"])
        oldest = GaugeMetricFamily("gateway_outbox_oldest_pending_seconds", "age of the oldest operation waiting for the chain",
                                   labels=["kind"])
        anchored = GaugeMetricFamily("gateway_anchor_age_seconds", "time since a log's root was last anchored on chain", labels=["log"])
        try:
            with reading(self.gw.sessions) as session:
                for kind, model in (("exchange", Exchange), ("redemption", Redemption)):
                    count, first = session.execute(select(func.count(), func.min(model.created_at)).where(model.status == "pending")).one()
                    depth.add_metric([kind], count)
                    oldest.add_metric([kind], _age(now, first))
                for kind, last in session.execute(select(LogAnchor.kind, func.max(LogAnchor.anchored_at)).group_by(LogAnchor.kind)):
                    anchored.add_metric([kind], _age(now, last))
        except Exception:
            log.warning("metrics: cannot read the database", exc_info=True)
            return
        yield from (depth, oldest, anchored)
        if self.gw.alliance is not None:
            try:
                head = self.gw.alliance.chain.w3.eth.get_block("latest")["timestamp"]
            except Exception:  # the chain is away: the metric is absent, which an alert can watch
                return
            yield GaugeMetricFamily("gateway_chain_head_age_seconds", "time since the chain's latest block",
                                    value=max(0.0, now.timestamp() - head))


def _age(now: datetime, then: datetime | None) -> float:
    return 0.0 if then is None else max(0.0, (now - as_utc(then)).total_seconds())
