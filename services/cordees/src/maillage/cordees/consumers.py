"""Event consumers of the cordees service: one EventConsumer per consumer group."""

from maillage.common.inbox import EventConsumer

CONSUMERS: list[EventConsumer] = []
