"""Event subscribers of the funding service (FastStream)."""

from faststream.kafka import KafkaRouter

router = KafkaRouter()
