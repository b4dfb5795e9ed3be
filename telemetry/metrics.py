"""Telemetry metrics, with the names of SPEC §12 (multiprocess mode: any
process may increment them; the web process's /metrics aggregates)."""

from prometheus_client import Counter

STATES = Counter(
    "telemetry_states_total",
    "Vehicle state messages by outcome: recorded, stale, malformed, unknown_vehicle.",
    ["outcome"],
)
POLL_TIMEOUTS = Counter(
    "telemetry_poll_timeout_total", "Vehicles that did not answer a pull round before its timeout."
)
POLLS = Counter(
    "telemetry_polls_total",
    "Pull rounds by outcome: finished, refused (overlap), failed (not published).",
    ["outcome"],
)
OFFLINE = Counter("telemetry_vehicle_offline_total", "Vehicles marked offline by their Last Will.")
DISCOVERED = Counter("telemetry_vehicles_registered_total", "Vehicles registered from discovery answers.")
