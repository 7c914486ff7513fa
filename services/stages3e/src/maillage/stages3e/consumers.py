"""Event consumers of the stages3e service: one EventConsumer per consumer group."""

from maillage.common.inbox import EventConsumer

CONSUMERS: list[EventConsumer] = []
