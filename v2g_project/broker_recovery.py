"""The Redis broker transport of the platform: kombu's, so that a worker
survives a Redis restart.

Celery 5.7 handles a lost broker connection in the worker by collecting it
(which detaches the transport from its kombu Connection) and then closing it,
before reconnecting. Two things then reach the old channel, whose connection
is gone, and fail with AttributeError rather than a connection error, which
Celery reports as an "Unrecoverable error": the worker exits instead of
carrying on (seen with celery 5.7.0 and kombu 5.7.0, reproduced by
tests/reliability/test_worker_faults.py::test_redis_restart_mid_dispatch_workers_resume):

- closing the channel restores the messages it still held (reserved, or
  running with ``acks_late``) through a new Redis client built from the
  Connection it no longer has;
- a task that was running during the outage finishes after the reconnect and
  its message is acked on that old channel.

No setting avoids it (broker_connection_retry, task_reject_on_worker_lost and
worker_cancel_long_running_tasks_on_connection_loss act elsewhere). Here a
channel without a connection raises redis' ConnectionError instead, which
Celery and kombu expect and handle: the ack is logged as failed, the close
goes on. The messages concerned stay in Redis's unacked set (persisted by the
append-only file) and are redelivered once ``celery.visibility_timeout_s`` has
passed (kombu's restore_visible, run by the reconnected worker); a redelivered
task is harmless (every task is idempotent), and the dispatch sweep does not
wait for it. Everything else is kombu's Redis transport, unchanged; settings
select it for ``redis://`` and ``rediss://`` brokers (``CELERY_BROKER_TRANSPORT``).
"""

from __future__ import annotations

from kombu.transport import redis
from redis import exceptions


class Channel(redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection is None or self.connection.client is None:
            raise exceptions.ConnectionError("this channel's broker connection was closed")
        return super()._connparams(asynchronous=asynchronous)

    def close(self) -> None:
        if self.connection is not None and self.connection.client is None:
            # Nothing can be restored through a connection that is gone (nor to a
            # Redis that just went away): the messages wait for the visibility timeout.
            self.do_restore = False
        super().close()


class Transport(redis.Transport):
    Channel = Channel
