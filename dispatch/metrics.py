"""Dispatch metrics, with the names and labels of SPEC §12."""

from prometheus_client import Counter, Gauge, Histogram

DISPATCH_LATENCY = Histogram(
    "dispatch_execution_latency_seconds",
    "Publish-to-ack latency of vehicle commands, observed when their round is final.",
    ["signal_type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0),
)
VEHICLES_DISPATCHED = Counter(
    "vehicles_dispatched_total", "Vehicle commands issued (one per vehicle per round).", ["signal_type"]
)
ACK_RATE = Gauge(
    "ack_rate",
    "Share of commands acknowledged in the latest finished dispatch round.",
    ["signal_type"],
    multiprocess_mode="mostrecent",
)
PUBLISH_SUCCESS = Counter("mqtt_publish_success_total", "Vehicle commands accepted by the MQTT broker.")
PUBLISH_FAILURE = Counter(
    "mqtt_publish_failure_total", "Vehicle command publish attempts that failed (each retry counts)."
)
ACKS = Counter(
    "dispatch_acks_total",
    "Acks received by outcome: accepted, rejected, duplicate, late, unknown, mismatch.",
    ["outcome"],
)

# --- synthetic RTE signal generator (issue 10) --------------------------------
GENERATOR_SIGNALS = Counter(
    "rte_generator_signals_total", "Synthetic signals submitted by the generator.", ["signal_type"]
)
GENERATOR_POWER_SUM = Gauge(
    "rte_generator_power_requested_kw_sum",
    "Sum of the signed power (kW, positive = to the grid) of the synthetic signals submitted.",
    multiprocess_mode="sum",
)
GENERATOR_LAST_EMIT = Gauge(
    "rte_generator_last_emit_timestamp_seconds",
    "Unix time of the generator's latest submitted signal.",
    multiprocess_mode="max",
)
GENERATOR_EMIT_ERRORS = Counter(
    "rte_generator_emit_errors_total", "Synthetic signals the generator failed to submit."
)
GENERATOR_INTERVAL = Histogram(
    "rte_generator_interval_seconds",
    "Scenario time between two consecutive synthetic signals.",
    buckets=(1.0, 4.0, 10.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 1800.0, 3600.0),
)

# --- RTE connector (issue 10) -------------------------------------------------
RTE_POLLS = Counter(
    "rte_connector_polls_total",
    "Polls of RTE's activation API by outcome: ok, unavailable, auth_error, protocol_error, error.",
    ["outcome"],
)
RTE_ACTIVATIONS = Counter(
    "rte_connector_activations_total",
    "RTE activations handled, by status: submitted, expired, rejected, duplicate (already received).",
    ["status"],
)
RTE_LAST_SUCCESS = Gauge(
    "rte_connector_last_success_timestamp_seconds",
    "Unix time of the connector's latest successful poll.",
    multiprocess_mode="max",
)
RTE_TOKEN_FETCHES = Counter("rte_connector_token_fetches_total", "OAuth2 access tokens fetched from RTE.")
