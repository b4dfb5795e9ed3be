"""KPI gauges (SPEC §12): ``vehicle_injected_energy_kwh``,
``vehicle_co2_avoided_grams`` and ``vehicle_energy_ratio``, labelled ``vehicle``
and ``day``.

A collector that reads the stored rows when /metrics is scraped, registered on
that view's registry, rather than Gauges set by the worker that recomputes:
in multiprocess mode a Gauge sample lives in its writer's file, so a day
that left the window (or a row a recomputation deleted) could not be removed
and would stay exposed, stale, for as long as the file; and each worker child
would hold its own copy. Read at scrape time the samples are exactly the
stored rows of the last ``metrics.kpi_days_exposed`` local days (bounded
cardinality: vehicles with energy x days), whichever process computed them.
The energy ratio has no sample when nothing was consumed (undefined).
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db import DatabaseError
from prometheus_client.core import GaugeMetricFamily

from kpis import selectors, services

log = logging.getLogger(__name__)

LABELS = ["vehicle", "day"]


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "vehicle_injected_energy_kwh",
            "Energy a vehicle delivered to the grid over a local day, kWh.",
            labels=LABELS,
        ),
        GaugeMetricFamily(
            "vehicle_co2_avoided_grams",
            "CO2 avoided by a vehicle's injection over a local day, grams.",
            labels=LABELS,
        ),
        GaugeMetricFamily(
            "vehicle_energy_ratio",
            "Injected / consumed energy of a vehicle over a local day (no sample when nothing was consumed).",
            labels=LABELS,
        ),
    )


class KpiCollector:
    """The last ``metrics.kpi_days_exposed`` days of stored KPIs, read at collect time."""

    def __init__(self, now: dt.datetime | None = None) -> None:
        self.now = now

    def describe(self):
        return list(_families())

    def collect(self):
        injected, co2, ratio = _families()
        since = services.local_today(self.now) - dt.timedelta(days=settings.V2G.metrics.kpi_days_exposed - 1)
        try:
            for vehicle_id, day, injected_kwh, co2_g, energy_ratio in selectors.exposed_rows(since):
                labels = [vehicle_id, day.isoformat()]
                injected.add_metric(labels, injected_kwh)
                co2.add_metric(labels, co2_g)
                if energy_ratio is not None:
                    ratio.add_metric(labels, energy_ratio)
        except DatabaseError as exc:  # the scrape still serves every other metric
            log.warning("KPI gauges not exposed: %s", exc)
        yield from (injected, co2, ratio)
