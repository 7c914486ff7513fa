"""Event subscribers of the cordees service (FastStream)."""

from faststream.kafka import KafkaRouter

router = KafkaRouter()
