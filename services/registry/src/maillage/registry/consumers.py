"""Event subscribers of the registry service (FastStream)."""

from faststream.kafka import KafkaRouter

router = KafkaRouter()
