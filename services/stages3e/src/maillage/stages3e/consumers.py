"""Event subscribers of the stages3e service (FastStream)."""

from faststream.kafka import KafkaRouter

router = KafkaRouter()
