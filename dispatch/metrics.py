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
