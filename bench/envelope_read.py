"""The consumer's envelope read: checked against CloudEvents 1.0, against the lenient read it
replaced. Pure CPU, no broker or database.

Run from the repository root::

    .venv/bin/python bench/envelope_read.py [--records 100000] [--rounds 5]

(a) the baseline: what the inbox did before, per record: headers decoded with replacement
    characters into a dict, ``UUID(ce_id)``, ``datetime.fromisoformat(ce_time)``;
(b) ``kafka_envelope.read_attributes`` (every header UTF-8, attribute names and values checked,
    RFC 3339 time, URI-reference source) and ``Envelope.from_attributes``.

Both read the headers the outbox relay writes (seven CloudEvents headers and ``traceparent``).
The best of ``--rounds`` rounds is kept; the load average is printed (a shared machine skews it).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from datetime import UTC, datetime

from maillage.common.events import Envelope, decode_headers
from maillage.common.kafka_envelope import read_attributes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    envelope = Envelope(
        uuid.uuid4(),
        "fr.maillage.registry.school.referenced.v1",
        "/maillage/registry",
        "0940123Y",
        datetime.now(UTC),
    )
    raw = [(name, value.encode()) for name, value in envelope.headers().items()]
    raw.append(("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))

    def lenient() -> None:
        headers = decode_headers(raw)
        uuid.UUID(headers["ce_id"])
        datetime.fromisoformat(headers["ce_time"].replace("Z", "+00:00"))

    def checked() -> None:
        attributes, _ = read_attributes(raw)
        Envelope.from_attributes(attributes)

    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    best: dict[str, float] = {}
    for _ in range(options.rounds):
        for name, read in (("(a) lenient read", lenient), ("(b) checked read", checked)):
            started = time.perf_counter()
            for _ in range(options.records):
                read()
            per_record = (time.perf_counter() - started) / options.records
            best[name] = min(best.get(name, per_record), per_record)
    for name, seconds in best.items():
        print(f"{name}: {seconds * 1e6:.1f} µs per record")
    ratio = best["(b) checked read"] / best["(a) lenient read"]
    print(f"checked / lenient: {ratio:.1f}×; load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
