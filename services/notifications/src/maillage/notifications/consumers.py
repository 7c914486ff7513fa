"""Event subscribers of the notifications service (FastStream)."""

from faststream.kafka import KafkaRouter

router = KafkaRouter()
