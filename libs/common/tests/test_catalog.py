"""The catalog refuses what must never reach the bus, and snapshots catch breaking changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated
from uuid import UUID

import pytest
from pydantic import BaseModel

from maillage.common.catalog import catalog as maillage_catalog
from maillage.common.events import Catalog, CatalogError, Event, Level, Topic
from maillage.common.schemas import breaking_changes, check_snapshots, schema_of, write_snapshots

SNAPSHOTS = Path(__file__).parents[1] / "event-schemas"


def fresh() -> tuple[Catalog, Topic]:
    catalog = Catalog()
    return catalog, catalog.topic("registry.partners", partitions=3)


class PartnerVerified(Event):
    partner_id: Annotated[UUID, Level.PUBLIC]
    legal_name: Annotated[str, Level.PUBLIC]
    departement: Annotated[str, Level.PARTNERS]


def test_a_well_formed_event_type_is_registered_with_its_levels() -> None:
    catalog, topic = fresh()
    spec = catalog.register(
        PartnerVerified,
        event_type="fr.maillage.registry.partner.verified.v1",
        topic=topic,
        key="partner_id",
    )
    assert spec.source == "/maillage/registry"
    assert spec.version == 1
    assert spec.levels == {
        "partner_id": Level.PUBLIC,
        "legal_name": Level.PUBLIC,
        "departement": Level.PARTNERS,
    }
    assert catalog.spec_of(PartnerVerified) is spec


def test_a_level_1_field_is_refused() -> None:
    catalog, topic = fresh()

    class ContactAdded(Event):
        partner_id: Annotated[UUID, Level.PUBLIC]
        contact_email: Annotated[str, Level.NOMINATIVE]

    with pytest.raises(
        CatalogError, match=r"level-1 \(nominative\) fields may not go on the bus: contact_email"
    ):
        catalog.register(
            ContactAdded,
            event_type="fr.maillage.registry.contact.added.v1",
            topic=topic,
            key="partner_id",
        )
    assert catalog.events == {}


def test_a_nested_level_1_field_is_refused_too() -> None:
    catalog, topic = fresh()

    class Contact(BaseModel):
        role: Annotated[str, Level.PUBLIC]
        phone: Annotated[str, Level.NOMINATIVE]

    class PartnerUpdated(Event):
        partner_id: Annotated[UUID, Level.PUBLIC]
        contacts: Annotated[list[Contact], Level.PARTNERS]

    with pytest.raises(CatalogError, match=r"contacts\.phone"):
        catalog.register(
            PartnerUpdated,
            event_type="fr.maillage.registry.partner.updated.v1",
            topic=topic,
            key="partner_id",
        )


def test_an_unclassified_field_is_refused() -> None:
    catalog, topic = fresh()

    class Sloppy(Event):
        partner_id: Annotated[UUID, Level.PUBLIC]
        comment: str

    with pytest.raises(CatalogError, match="'comment' must declare one confidentiality level"):
        catalog.register(
            Sloppy,
            event_type="fr.maillage.registry.partner.commented.v1",
            topic=topic,
            key="partner_id",
        )


@pytest.mark.parametrize(
    ("event_type", "message"),
    [
        ("partner.verified", "types are fr.maillage"),
        ("fr.maillage.registry.partner.verified", "types are fr.maillage"),
        ("fr.maillage.registry.partner.verified.v0", "types are fr.maillage"),
        (
            "fr.maillage.funding.partner.verified.v1",
            "a funding event cannot go to registry.partners",
        ),
    ],
)
def test_type_names_follow_the_convention(event_type: str, message: str) -> None:
    catalog, topic = fresh()
    with pytest.raises(CatalogError, match=message):
        catalog.register(PartnerVerified, event_type=event_type, topic=topic, key="partner_id")


def test_topics_and_keys_are_checked() -> None:
    catalog, topic = fresh()
    with pytest.raises(CatalogError, match=r"named <service>\.<aggregate>"):
        catalog.topic("Partners", partitions=1)
    with pytest.raises(CatalogError, match="declared twice"):
        catalog.topic("registry.partners", partitions=3)
    with pytest.raises(CatalogError, match="key field 'id'"):
        catalog.register(
            PartnerVerified,
            event_type="fr.maillage.registry.partner.verified.v1",
            topic=topic,
            key="id",
        )
    stranger = Catalog().topic("registry.tokens", partitions=3)
    with pytest.raises(CatalogError, match="not declared in this catalog"):
        catalog.register(
            PartnerVerified,
            event_type="fr.maillage.registry.partner.verified.v1",
            topic=stranger,
            key="partner_id",
        )


def registered(model: type[Event]) -> dict[str, object]:
    catalog, topic = fresh()
    spec = catalog.register(
        model, event_type="fr.maillage.registry.partner.verified.v1", topic=topic, key="partner_id"
    )
    return schema_of(spec)


def test_the_schema_check_catches_a_removed_field() -> None:
    class Without(Event):
        partner_id: Annotated[UUID, Level.PUBLIC]
        legal_name: Annotated[str, Level.PUBLIC]

    assert breaking_changes(registered(PartnerVerified), registered(Without)) == [
        "field 'departement' was removed or renamed"
    ]


def test_the_schema_check_catches_renames_type_changes_and_new_required_fields() -> None:
    class Changed(Event):
        partner_id: Annotated[str, Level.PUBLIC]  # was a UUID
        name: Annotated[str, Level.PUBLIC]  # was legal_name
        departement: Annotated[str, Level.PARTNERS]

    problems = breaking_changes(registered(PartnerVerified), registered(Changed))
    assert "field 'legal_name' was removed or renamed" in problems
    assert "new required field 'name'" in problems
    assert any(p.startswith("field 'partner_id' changed type") for p in problems)


def test_an_optional_new_field_is_compatible() -> None:
    class Extended(Event):
        partner_id: Annotated[UUID, Level.PUBLIC]
        legal_name: Annotated[str, Level.PUBLIC]
        departement: Annotated[str, Level.PARTNERS]
        commune: Annotated[str | None, Level.PUBLIC] = None

    assert breaking_changes(registered(PartnerVerified), registered(Extended)) == []


def test_snapshots_flag_breaking_changes_unless_the_version_is_bumped(tmp_path: Path) -> None:
    catalog, topic = fresh()
    catalog.register(
        PartnerVerified,
        event_type="fr.maillage.registry.partner.verified.v1",
        topic=topic,
        key="partner_id",
    )
    write_snapshots(catalog, tmp_path)
    assert check_snapshots(catalog, tmp_path) == []

    class Without(Event):
        partner_id: Annotated[UUID, Level.PUBLIC]

    changed, topic = fresh()
    changed.register(
        Without,
        event_type="fr.maillage.registry.partner.verified.v1",
        topic=topic,
        key="partner_id",
    )
    [problem] = check_snapshots(changed, tmp_path)
    assert "backward-incompatible change" in problem
    assert "'legal_name' was removed" in problem

    bumped, topic = fresh()
    bumped.register(
        Without,
        event_type="fr.maillage.registry.partner.verified.v2",
        topic=topic,
        key="partner_id",
    )
    problems = check_snapshots(bumped, tmp_path)
    assert problems == [
        "fr.maillage.registry.partner.verified.v2: no snapshot; run `maillage events snapshot`",
        "fr.maillage.registry.partner.verified.v1.json: snapshot of a type no longer in the "
        "catalog; delete it",
    ]


def test_the_committed_snapshots_match_the_catalog() -> None:
    """The real catalog: every type has its committed snapshot, and none changed incompatibly."""
    assert check_snapshots(maillage_catalog, SNAPSHOTS) == []
    for path in SNAPSHOTS.glob("*.json"):
        assert json.loads(path.read_text())["x-maillage"]["type"] == path.stem


def test_asyncapi_documents_what_a_service_publishes_and_consumes() -> None:
    from faststream.specification import AsyncAPI

    from maillage.common.http import create_app
    from maillage.common.inbox import Delivery, EventConsumer
    from maillage.common.settings import ServiceSettings

    catalog, topic = fresh()
    catalog.register(
        PartnerVerified,
        event_type="fr.maillage.registry.partner.verified.v1",
        topic=topic,
        key="partner_id",
    )
    watcher = EventConsumer("registry.watch", [topic], catalog=catalog)

    @watcher.handler(PartnerVerified)
    async def watch(event: PartnerVerified, delivery: Delivery) -> None:
        pass

    settings = ServiceSettings(service_name="registry", database_url="postgresql://x@h/x")
    app = create_app(settings, title="r", description="r", consumers=[watcher], catalog=catalog)
    document = AsyncAPI(app.state.runtime.broker, title="r").to_specification().to_jsonable()
    assert set(document["channels"]) == {
        "registry.watch:consume",
        "fr.maillage.registry.partner.verified.v1",
    }
    assert "PartnerVerified" in json.dumps(document["components"]["schemas"])
