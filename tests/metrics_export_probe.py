"""Run by test_metrics_export.py in a process of its own (one global meter provider per process).

Starts the cordees, notifications, stages3e and funding services on real databases and the
real broker, with OTLP export on, and makes every metric the dashboards and alert rules read
happen at least once: HTTP requests (a 200 and a 401), an event published through the outbox,
consumed by the services, consumed again (a duplicate) and a record that is not an event (a
dead letter), a webhook attempt answered 410 (the endpoint is disabled), an e-mail whose SMTP
server is down (a retry), a funding envelope; consumer lag, readiness and the domain gauges are
sampled every 0.3 s.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from asgi_lifespan import LifespanManager

from maillage.common.catalog import PARTNERS, PartnerRegistered
from maillage.common.db import transaction
from maillage.common.metrics import readings
from maillage.common.outbox import publish
from maillage.common.telemetry import shutdown_telemetry
from maillage.cordees.app import CordeesSettings
from maillage.cordees.app import create as create_cordees
from maillage.funding.app import FundingSettings
from maillage.funding.app import create as create_funding
from maillage.notifications import mail, signing, store
from maillage.notifications.app import NotificationsSettings
from maillage.notifications.app import create as create_notifications
from maillage.notifications.secretbox import SecretBox
from maillage.stages3e.app import Stages3eSettings
from maillage.stages3e.app import create as create_stages3e

SECRET_KEY = "metrics probe webhook secret encryption key"


class _Gone(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(410)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def _wait(condition: object, what: str, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = condition() if callable(condition) else condition
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.1)


async def main(
    cordees_db: str,
    notifications_db: str,
    stages3e_db: str,
    funding_db: str,
    bootstrap: str,
    jwks_url: str,
) -> None:
    gone = HTTPServer(("127.0.0.1", 0), _Gone)
    threading.Thread(target=gone.serve_forever, daemon=True).start()
    common = {
        "environment": "test",
        "kafka_bootstrap_servers": bootstrap,
        "kafka_idempotent_producer": False,
        "jwks_url": jwks_url,
        "log_level": "WARNING",
        "metrics_lag_seconds": 0.3,
        "metrics_gauge_seconds": 0.3,
    }
    cordees = create_cordees(CordeesSettings(database_url=cordees_db, **common))  # type: ignore[arg-type]
    notifications = create_notifications(
        NotificationsSettings(
            database_url=notifications_db,  # type: ignore[arg-type]
            webhook_allow_http=True,
            webhook_allowed_hosts=frozenset({"127.0.0.0/8"}),
            webhook_poll_interval_seconds=0.05,
            secret_encryption_key=SECRET_KEY,  # type: ignore[arg-type]
            smtp_host="127.0.0.1",
            smtp_port=_closed_port(),
            smtp_tls="none",
            mail_poll_interval_seconds=0.05,
            **common,
        )
    )
    stages3e = create_stages3e(Stages3eSettings(database_url=stages3e_db, **common))  # type: ignore[arg-type]
    funding = create_funding(FundingSettings(database_url=funding_db, **common))  # type: ignore[arg-type]
    async with (
        LifespanManager(cordees, startup_timeout=90),
        LifespanManager(notifications, startup_timeout=90),
        LifespanManager(stages3e, startup_timeout=90),
        LifespanManager(funding, startup_timeout=90),
    ):
        await funding.state.runtime.pool.execute(
            """
            INSERT INTO envelopes (id, departement, year, ae_cents, cp_cents, ae_engaged_cents,
                                   cp_paid_cents, created_by, created_at, updated_at)
            VALUES ($1, '94', 2027, 100000000, 80000000, 25000000, 10000000, 'probe', now(), now())
            """,
            uuid.uuid4(),
        )
        transport = httpx.ASGITransport(app=cordees)
        async with httpx.AsyncClient(transport=transport, base_url="http://cordees") as client:
            assert (await client.get("/openapi.json")).status_code == 200
            assert (await client.get("/offers")).status_code == 401

        # The backbone: one event through cordees' outbox, consumed by both services.
        cordees_pool = cordees.state.runtime.pool
        probe_partner = uuid.uuid4()
        async with transaction(cordees_pool) as connection:
            await publish(
                connection,
                PartnerRegistered(
                    partner_id=probe_partner,
                    kind="association",
                    legal_name="Sonde des métriques",
                    status="pending",
                    version=1,
                ),
            )
        consumer = AIOKafkaConsumer(
            PARTNERS.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            # This event, not the topic's first record: under `make test` the broker is the
            # session's, and earlier records on the topic are other tests' (never applied here).
            record = None
            while record is None:
                batches = await consumer.getmany(timeout_ms=1000)
                record = next(
                    (
                        r
                        for batch in batches.values()
                        for r in batch
                        if r.key == str(probe_partner).encode()
                    ),
                    None,
                )
        finally:
            await consumer.stop()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:  # the same record again (a duplicate), then one that is no event (a dead letter)
            await producer.send_and_wait(
                PARTNERS.name, record.value, key=record.key, headers=list(record.headers)
            )
            not_an_event = await producer.send_and_wait(
                PARTNERS.name, b"not an event", key=record.key
            )
        finally:
            await producer.stop()

        # Notifications: an endpoint that answers 410 Gone, and a mail to an SMTP server down.
        pool = notifications.state.runtime.pool
        box = SecretBox(SECRET_KEY)
        endpoint_id = uuid.uuid4()
        async with transaction(pool) as connection:
            await store.create_endpoint(
                connection,
                endpoint_id=endpoint_id,
                partner_id=uuid.uuid4(),
                url=f"http://127.0.0.1:{gone.server_port}/hook",
                sealed_secret=box.seal(signing.new_secret(), endpoint_id),
                event_types=(),
            )
            body = signing.body_for("cordees.proposal.created", datetime.now(UTC), {"n": 1})
            await store.enqueue(
                connection,
                endpoint_id=endpoint_id,
                event_id=uuid.uuid4(),
                event_type="cordees.proposal.created",
                payload=body.decode(),
                now=datetime.now(UTC),
            )
            await mail.queue(
                connection,
                to="sonde@example.org",
                template="email_confirmation",
                context={"token": "t", "address": "sonde@example.org"},
                dedupe_key="probe",
            )

        async def attempted() -> bool:
            webhook = await pool.fetchval("SELECT count(*) FROM delivery_attempts")
            mailed = await pool.fetchval("SELECT count(*) FROM outgoing_mail WHERE attempts > 0")
            return bool(webhook and mailed)

        async def consumed() -> bool:
            """Every service's groups hold partitions, their lag was sampled at zero, and every
            group reading the partners has committed past the duplicate and the dead letter (a
            lag sample taken before they were produced also reads zero)."""
            lag = readings.latest("maillage.consumer.lag")
            groups = {labels["group"] for _, labels in lag}
            services = {str(group).split(".")[0] for group in groups}
            expected = {"cordees", "notifications", "stages3e", "funding"}
            if services != expected or any(v != 0 for v, _ in lag):
                return False
            partition = TopicPartition(PARTNERS.name, not_an_event.partition)
            readers = {labels["group"] for _, labels in lag if labels["topic"] == PARTNERS.name}
            for group in readers:  # asked as the group's own consumers ask (OffsetFetch)
                reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
                await reader.start()
                try:
                    committed = await reader.committed(partition)
                finally:
                    await reader.stop()
                if committed is None or committed <= not_an_event.offset:
                    return False
            return True

        await _wait(attempted, "the webhook attempt and the mail attempt")
        await _wait(consumed, "consumer lag sampled at zero")
        await asyncio.sleep(1.5)  # a few more samples and exports
    gone.shutdown()
    shutdown_telemetry()


if __name__ == "__main__":
    asyncio.run(main(**json.loads(sys.argv[1])))
