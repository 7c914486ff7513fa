"""Events: the catalog of event types and topics, and their CloudEvents envelope on Kafka.

An event type is a pydantic model registered in a :class:`Catalog` with its CloudEvents type
(``fr.maillage.<service>.<entity>.<verb>.v<N>``), its topic and the field holding the aggregate id
(the Kafka key). Every field declares its confidentiality level from the PRE charter
(``Annotated[str, Level.PUBLIC]``); a level-1 (nominative) field is refused at registration, so
no nominative data can reach the bus.

On the wire an event is a Kafka record in CloudEvents binary mode: ``ce_*`` headers, the data as
JSON in the value, the aggregate id as the key, and the W3C trace context.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from maillage.common.kafka_envelope import EnvelopeError, parse_timestamp, read_attributes

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"

_TYPE = re.compile(
    r"^fr\.maillage\.(?P<service>[a-z0-9]+)\.(?P<entity>[a-z][a-z0-9-]*)"
    r"\.(?P<verb>[a-z][a-z0-9-]*)\.v(?P<version>[1-9][0-9]*)$"
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_TOPIC = re.compile(r"^(?P<service>[a-z0-9]+)\.[a-z][a-z0-9-]*$")


class Level(IntEnum):
    """Confidentiality levels of the PRE charter (seed 002)."""

    NOMINATIVE = 1  # identifying a person: never shared, never on the bus
    PARTNERS = 2  # usable by every actor of the signatory institutions
    PUBLIC = 3  # public information


class Event(BaseModel):
    """Base of every event's data. Immutable; unknown fields are refused when validating."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class CatalogError(ValueError):
    """An event type or topic that cannot be registered as declared."""


@dataclass(frozen=True)
class Topic:
    """A Kafka topic: ``<service>.<aggregate>``, with an explicit partition count."""

    name: str
    partitions: int
    description: str = ""

    @property
    def service(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass(frozen=True)
class EventSpec:
    """How one event type travels: its model, topic, key field and field levels."""

    event_type: str
    model: type[Event]
    topic: Topic
    key_field: str
    levels: Mapping[str, Level]

    @property
    def service(self) -> str:
        match = _TYPE.match(self.event_type)
        assert match is not None
        return match["service"]

    @property
    def version(self) -> int:
        match = _TYPE.match(self.event_type)
        assert match is not None
        return int(match["version"])

    @property
    def source(self) -> str:
        return f"/maillage/{self.service}"

    def key_of(self, event: Event) -> str:
        return str(getattr(event, self.key_field))


E = TypeVar("E", bound=type[Event])


@dataclass
class Catalog:
    """Every topic and event type of the system. ``maillage.common.catalog`` holds the real one;
    tests build their own."""

    topics: dict[str, Topic] = field(default_factory=dict)
    events: dict[str, EventSpec] = field(default_factory=dict)
    _by_model: dict[type[Event], EventSpec] = field(default_factory=dict)

    def topic(self, name: str, *, partitions: int, description: str = "") -> Topic:
        if not _TOPIC.match(name):
            raise CatalogError(f"topic {name!r}: topics are named <service>.<aggregate>")
        if partitions < 1:
            raise CatalogError(f"topic {name!r}: at least one partition")
        if name in self.topics:
            raise CatalogError(f"topic {name!r} is declared twice")
        topic = Topic(name, partitions, description)
        self.topics[name] = topic
        return topic

    def event(self, event_type: str, *, topic: Topic, key: str) -> Callable[[E], E]:
        """Class decorator registering an event model under its CloudEvents type."""

        def register(model: E) -> E:
            self.register(model, event_type=event_type, topic=topic, key=key)
            return model

        return register

    def register(self, model: type[Event], *, event_type: str, topic: Topic, key: str) -> EventSpec:
        match = _TYPE.match(event_type)
        if match is None:
            raise CatalogError(
                f"event type {event_type!r}: types are fr.maillage.<service>.<entity>.<verb>.v<N>"
            )
        if topic.name not in self.topics or self.topics[topic.name] != topic:
            raise CatalogError(
                f"{event_type}: topic {topic.name!r} is not declared in this catalog"
            )
        if match["service"] != topic.service:
            raise CatalogError(
                f"{event_type}: a {match['service']} event cannot go to {topic.name}"
            )
        if event_type in self.events:
            raise CatalogError(f"event type {event_type!r} is registered twice")
        if key not in model.model_fields:
            raise CatalogError(
                f"{event_type}: key field {key!r} is not a field of {model.__name__}"
            )
        levels = field_levels(model, event_type)
        nominative = sorted(name for name, level in levels.items() if level is Level.NOMINATIVE)
        if nominative:
            raise CatalogError(
                f"{event_type}: level-1 (nominative) fields may not go on the bus: "
                + ", ".join(nominative)
            )
        spec = EventSpec(
            event_type=event_type, model=model, topic=topic, key_field=key, levels=levels
        )
        self.events[event_type] = spec
        self._by_model[model] = spec
        return spec

    def spec_of(self, event: Event | type[Event]) -> EventSpec:
        model = event if isinstance(event, type) else type(event)
        try:
            return self._by_model[model]
        except KeyError:
            raise CatalogError(f"{model.__name__} is not a registered event type") from None

    def types_on(self, topics: Iterable[Topic]) -> dict[str, EventSpec]:
        names = {topic.name for topic in topics}
        return {t: spec for t, spec in self.events.items() if spec.topic.name in names}


def field_levels(model: type[BaseModel], owner: str, prefix: str = "") -> dict[str, Level]:
    """The level of every field, nested models included (``contact.email``); every field must
    declare exactly one."""
    levels: dict[str, Level] = {}
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        declared = [item for item in info.metadata if isinstance(item, Level)]
        if len(declared) != 1:
            raise CatalogError(
                f"{owner}: field {path!r} must declare one confidentiality level "
                "(Annotated[..., Level.PUBLIC | Level.PARTNERS])"
            )
        levels[path] = declared[0]
        for nested in _nested_models(info.annotation):
            for sub, level in field_levels(nested, owner, f"{path}.").items():
                # A nested field is as confidential as its most confidential container.
                levels[sub] = Level(min(level, declared[0]))
    return levels


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None:
        return []
    if origin is typing.Annotated:
        return _nested_models(typing.get_args(annotation)[0])
    found: list[type[BaseModel]] = []
    for argument in typing.get_args(annotation):
        if argument is not types.NoneType:
            found.extend(_nested_models(argument))
    return found


# --- The envelope --------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """The CloudEvents attributes of one event, as carried in Kafka headers."""

    id: UUID
    type: str
    source: str
    subject: str
    time: datetime

    def headers(self) -> dict[str, str]:
        return {
            "ce_specversion": SPECVERSION,
            "ce_id": str(self.id),
            "ce_source": self.source,
            "ce_type": self.type,
            "ce_time": self.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "ce_subject": self.subject,
            "content-type": CONTENT_TYPE,
        }

    @classmethod
    def from_headers(cls, raw: Iterable[tuple[str, bytes | None]]) -> Envelope:
        """Read the envelope of a record from its raw header pairs.

        The attributes are first checked against CloudEvents 1.0 and its Kafka binding
        (:mod:`maillage.common.kafka_envelope`), then against what every Maillage event carries:
        an ``id`` that is a UUID, a ``time``, a JSON ``datacontenttype`` (or none, meaning
        JSON), and for a ``fr.maillage.<service>.…`` type the source ``/maillage/<service>``.
        Raises :class:`EnvelopeError` naming the header and the rule.
        """
        attributes, _ = read_attributes(raw)
        return cls.from_attributes(attributes)

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, str]) -> Envelope:
        """The envelope from attributes already read by ``kafka_envelope.read_attributes``."""
        event_type, source = attributes["type"], attributes["source"]
        if not _UUID.match(attributes["id"]):
            raise EnvelopeError(f"ce_id {attributes['id']!r}: a Maillage event id is a UUID")
        if "time" not in attributes:
            raise EnvelopeError("no ce_time header: a Maillage event says when it happened")
        content_type = attributes.get("datacontenttype", CONTENT_TYPE)
        if content_type.split(";")[0].strip().lower() != CONTENT_TYPE:
            raise EnvelopeError(f"content-type {content_type!r}: Maillage event data is JSON")
        match = _TYPE.match(event_type)
        if match is not None and source != f"/maillage/{match['service']}":
            raise EnvelopeError(
                f"ce_source {source!r} does not publish {event_type} "
                f"(/maillage/{match['service']} does)"
            )
        return cls(
            id=UUID(attributes["id"]),
            type=event_type,
            source=source,
            subject=attributes.get("subject", ""),
            time=parse_timestamp(attributes["time"]),
        )


def decode_headers(raw: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    """Headers as text for display, whatever their bytes (a null value reads as "")."""
    return {name: (value or b"").decode("utf-8", "replace") for name, value in raw}


def encode_headers(headers: Mapping[str, str]) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in headers.items()]
