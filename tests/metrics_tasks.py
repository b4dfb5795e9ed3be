"""Tasks for tests/test_metrics_celery.py, loaded by its worker (``--include``):
one that succeeds, one that fails, one that retries once then succeeds."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="tests.metrics.ok", ignore_result=False)
def ok(value: int = 0) -> int:
    return value


@shared_task(name="tests.metrics.fail", ignore_result=False)
def fail() -> None:
    raise ValueError("this task fails on purpose")


@shared_task(name="tests.metrics.flaky", bind=True, ignore_result=False, max_retries=3)
def flaky(self) -> str:
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return f"succeeded after {self.request.retries} retry"
