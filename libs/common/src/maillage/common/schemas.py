"""JSON Schema snapshots of event types, and the backward-compatibility rule they enforce.

A consumer written against version N of an event type must keep working with every later
message of that type. So, within one type (same ``.vN``), a change may add optional fields and
nothing else: removing or renaming a field, changing a field's type or adding a required field
needs a new type version (``.v2``), which is a new type with a snapshot of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from maillage.common.events import Catalog, EventSpec


def schema_of(spec: EventSpec) -> dict[str, Any]:
    schema: dict[str, Any] = spec.model.model_json_schema(mode="serialization")
    schema["x-maillage"] = {
        "type": spec.event_type,
        "topic": spec.topic.name,
        "key": spec.key_field,
        "levels": {name: int(level) for name, level in sorted(spec.levels.items())},
    }
    return schema


def breaking_changes(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    """What in ``new`` breaks a consumer of ``old`` (empty when compatible)."""
    problems: list[str] = []
    old_properties = _properties(old, old)
    new_properties = _properties(new, new)
    for name, old_field in old_properties.items():
        where = f"{path}{name}"
        if name not in new_properties:
            problems.append(f"field {where!r} was removed or renamed")
            continue
        old_shape = _shape(old_field, old)
        new_shape = _shape(new_properties[name], new)
        if old_shape != new_shape:
            problems.append(f"field {where!r} changed type: {old_shape} → {new_shape}")
        old_nested, new_nested = _resolve(old_field, old), _resolve(new_properties[name], new)
        if "properties" in old_nested and "properties" in new_nested:
            problems.extend(
                breaking_changes({**old, **old_nested}, {**new, **new_nested}, path=f"{where}.")
            )
    old_required = set(_resolve(old, old).get("required", []))
    for name in sorted(set(_resolve(new, new).get("required", [])) - old_required):
        if name in old_properties:
            problems.append(f"field {path}{name!r} became required")
        else:
            problems.append(f"new required field {path}{name!r}")
    return problems


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved: dict[str, Any] = root.get("$defs", {})[ref.removeprefix("#/$defs/")]
        return resolved
    return node


def _properties(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = _resolve(node, root).get("properties", {})
    return properties


def _shape(node: dict[str, Any], root: dict[str, Any]) -> str:
    """A comparable description of a field's type (titles and descriptions do not count)."""
    node = _resolve(node, root)
    if "anyOf" in node:
        return "|".join(sorted(_shape(option, root) for option in node["anyOf"]))
    if "enum" in node:
        return f"enum{sorted(map(str, node['enum']))}"
    if node.get("type") == "array":
        return f"array[{_shape(node.get('items', {}), root)}]"
    if "properties" in node:
        return "object"
    return f"{node.get('type', 'any')}:{node.get('format', '')}"


def snapshot_path(folder: Path, event_type: str) -> Path:
    return folder / f"{event_type}.json"


def write_snapshots(catalog: Catalog, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type, spec in sorted(catalog.events.items()):
        path = snapshot_path(folder, event_type)
        path.write_text(json.dumps(schema_of(spec), indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def check_snapshots(catalog: Catalog, folder: Path) -> list[str]:
    """Compare the catalog with the committed snapshots; return what is wrong, for a person."""
    problems = []
    known = set()
    for event_type, spec in sorted(catalog.events.items()):
        known.add(event_type)
        path = snapshot_path(folder, event_type)
        current = schema_of(spec)
        if not path.exists():
            problems.append(f"{event_type}: no snapshot; run `maillage events snapshot`")
            continue
        committed = json.loads(path.read_text())
        if committed == current:
            continue
        breaking = breaking_changes(committed, current)
        if breaking:
            problems.append(
                f"{event_type}: backward-incompatible change ({'; '.join(breaking)}); "
                "register it as a new version (.v{N+1}) instead"
            )
        else:
            problems.append(f"{event_type}: compatible change; run `maillage events snapshot`")
    for path in sorted(folder.glob("*.json")):
        if path.stem not in known:
            problems.append(f"{path.name}: snapshot of a type no longer in the catalog; delete it")
    return problems
