"""``GET /metrics``: the server's requests in Prometheus' text format (version 0.0.4).

- ``cmcr_requests_total{route, method, status}``: answered requests (a counter);
- ``cmcr_request_duration_seconds{route}``: time to the last byte of the answer (a histogram);
- ``cmcr_request_errors_total{route, status}``: answers with a 4xx or 5xx status (a counter);
- ``cmcr_index_rows``: rows in the index served (a gauge).

Routes are the API's own (``/api/search``, ``/media``...; anything else is ``other``), so
hostile URLs cannot grow the label set. Counted on the event loop's thread, so no lock.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from typing import Any

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds
ROUTES = ("/api/search", "/api/info", "/metrics", "/static", "/media")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def route_of(path: str) -> str:
    if path == "/":
        return "/"
    return next((route for route in ROUTES if path == route or path.startswith(route + "/")),
                "other")


class Metrics:
    """ASGI middleware counting every request it passes on; :meth:`render` writes them out."""

    def __init__(self, app: Any, rows: int = 0):
        self.app = app
        self.rows = rows
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.errors: dict[tuple[str, str], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.seconds: dict[str, float] = defaultdict(float)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began, status = time.perf_counter(), [500]

        async def counted_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        finally:
            self.observe(route_of(scope["path"]), scope.get("method", "GET"), status[0],
                         time.perf_counter() - began)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests[route, method, str(status)] += 1
        if status >= 400:
            self.errors[route, str(status)] += 1
        self.buckets[route][bisect.bisect_left(BUCKETS, seconds)] += 1
        self.seconds[route] += seconds

    def render(self) -> str:
        """Everything counted so far, in Prometheus' text exposition format."""
        lines = ["# HELP cmcr_index_rows Rows in the index this server searches.",
                 "# TYPE cmcr_index_rows gauge", f"cmcr_index_rows {self.rows}",
                 "# HELP cmcr_requests_total HTTP requests answered, by route, method and status.",
                 "# TYPE cmcr_requests_total counter"]
        lines += [f'cmcr_requests_total{{route="{r}",method="{m}",status="{s}"}} {n}'
                  for (r, m, s), n in sorted(self.requests.items())]
        lines += ["# HELP cmcr_request_errors_total HTTP answers with a 4xx or 5xx status.",
                  "# TYPE cmcr_request_errors_total counter"]
        lines += [f'cmcr_request_errors_total{{route="{r}",status="{s}"}} {n}'
                  for (r, s), n in sorted(self.errors.items())]
        lines += ["# HELP cmcr_request_duration_seconds Time from a request to the end of its "
                  "answer.", "# TYPE cmcr_request_duration_seconds histogram"]
        for route in sorted(self.buckets):
            running = 0
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], self.buckets[route]):
                running += count
                lines.append(f'cmcr_request_duration_seconds_bucket{{route="{route}",'
                             f'le="{bound}"}} {running}')
            lines.append(f'cmcr_request_duration_seconds_sum{{route="{route}"}} '
                         f"{self.seconds[route]:.6f}")
            lines.append(f'cmcr_request_duration_seconds_count{{route="{route}"}} {running}')
        return "\n".join(lines) + "\n"
