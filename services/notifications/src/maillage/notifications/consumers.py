"""Event consumers of the notifications service: one EventConsumer per consumer group."""

from maillage.common.inbox import EventConsumer

CONSUMERS: list[EventConsumer] = []
