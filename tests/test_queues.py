"""Task routing (v2g_project/queues.py) and the scaling keys of the
configuration; pure logic, no broker."""

from __future__ import annotations

import pytest
from celery import Celery

from v2g_project import queues
from v2g_project.bridge import subscription_filter
from v2g_project.config import ConfigError, load_config

EXPECTED = {
    "dispatch.allocate": ("dispatch", 0),
    "dispatch.publish": ("dispatch", 0),
    "dispatch.collect": ("dispatch", 0),
    "dispatch.sweep": ("dispatch", 0),
    "dispatch.generator_emit": ("dispatch", 0),
    "scheduler.execute_slot": ("dispatch", 0),
    "telemetry.poll": ("telemetry", 3),
    "telemetry.poll_finish": ("telemetry", 3),
    "scheduler.plan_next_day": ("planning", 6),
    "kpis.backfill": ("kpis", 6),
    "kpis.recompute_recent": ("kpis", 6),
}


def router(environ: dict[str, str]):
    cfg = load_config(environ, path=None, base_dir=None).celery
    app = Celery("routing-test", set_as_current=False)
    app.conf.update(
        task_default_queue=cfg.default_queue,
        task_queues=queues.task_queues(cfg),
        task_routes=queues.task_routes(cfg),
    )
    return app.amqp.router


def route(router, name: str, **options) -> tuple[str, int | None]:
    found = router.route(options, name, (), {}, None)
    return found["queue"].name, found.get("priority")


def test_each_class_of_task_goes_to_its_queue_with_its_priority():
    r = router({})
    for name, expected in EXPECTED.items():
        assert route(r, name) == expected, name
    assert route(r, "v2g.health_ping") == ("celery", None)


def test_every_task_of_the_platform_has_a_class():
    from v2g_project.celery import app

    app.loader.import_default_modules()
    names = {name for name in app.tasks if not name.startswith("celery.")}
    unrouted = {name for name in names if route(app.amqp.router, name)[0] == app.conf.task_default_queue}
    assert unrouted == {"v2g.health_ping"}


def test_queue_names_come_from_the_config_and_an_explicit_queue_still_wins():
    r = router({"K_CELERY__QUEUES__DISPATCH": "fast", "K_CELERY__QUEUES__KPIS": "slow"})
    assert route(r, "dispatch.publish") == ("fast", 0)
    assert route(r, "kpis.backfill") == ("slow", 6)
    assert route(r, "dispatch.publish", queue="elsewhere")[0] == "elsewhere"


def test_a_worker_without_q_consumes_every_queue_dispatch_first_and_once():
    cfg = load_config({}, path=None, base_dir=None).celery
    assert queues.queue_names(cfg) == ["dispatch", "celery", "telemetry", "planning", "kpis"]
    shared = load_config(
        {"K_CELERY__QUEUES__PLANNING": "background", "K_CELERY__QUEUES__KPIS": "background"},
        path=None, base_dir=None,
    ).celery  # fmt: skip
    assert queues.queue_names(shared) == ["dispatch", "celery", "telemetry", "background"]
    everything_default = load_config(
        {f"K_CELERY__QUEUES__{cls.upper()}": "celery" for cls in queues.CLASS_ORDER}, path=None, base_dir=None
    ).celery
    assert [q.name for q in queues.task_queues(everything_default)] == ["celery"]


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"K_MQTT__SHARED_GROUP": "a/b"}, "mqtt.shared_group"),
        ({"K_MQTT__SHARED_GROUP": "g+"}, "mqtt.shared_group"),
        ({"K_CELERY__QUEUES__DISPATCH": "has space"}, "celery.queues.dispatch"),
        ({"K_CELERY__QUEUES__DISPATCH": ""}, "celery.queues.dispatch"),
        ({"K_CELERY__QUEUES__BULK": "x"}, "K_CELERY__QUEUES__BULK: unknown key"),
        ({"K_CELERY__PREFETCH_MULTIPLIER": "0"}, "celery.prefetch_multiplier"),
    ],
)
def test_bad_scaling_keys_stop_start_up_naming_the_key(environ, named):
    with pytest.raises(ConfigError) as info:
        load_config(environ, path=None, base_dir=None)
    assert named.lower() in str(info.value).lower()


def test_a_shared_group_prefixes_every_subscription():
    assert subscription_filter("vehicle/+/ack", "") == "vehicle/+/ack"
    assert subscription_filter("vehicle/+/ack", "v2g-bridges") == "$share/v2g-bridges/vehicle/+/ack"
