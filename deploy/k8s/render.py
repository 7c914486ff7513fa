"""Renders the kustomize overlays of deploy/k8s without kustomize, into deploy/k8s/rendered/.

    .venv/bin/python deploy/k8s/render.py          # writes rendered/dev.yaml and rendered/prod.yaml
    .venv/bin/python deploy/k8s/render.py --check  # exit 1 if a committed file is out of date

It implements the part of kustomize these kustomizations use, with kustomize's meaning:
``resources`` (files and directories, depth first), ``namespace`` (set on every namespaced
resource), ``images`` (``newName`` / ``newTag`` of the containers whose image name matches) and
``patches`` with an inline JSON 6902 ``patch`` and a ``target`` of ``kind`` and optional
``name``; anything else is refused rather than ignored. tests/test_k8s.py checks that
``kubectl kustomize`` (kustomize v5) renders the same resources where kubectl is installed, and
validates every rendered resource against the Kubernetes API schemas (kubernetes-validate).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
OVERLAYS = ("dev", "prod")
RENDERED = HERE / "rendered"
SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
# kustomize's "legacy" output order: these kinds first, in this order, then the rest by kind.
ORDER_FIRST = [
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
]

Resource = dict[str, Any]


def build(folder: Path) -> list[Resource]:
    """The resources of the kustomization in ``folder``, transformed as kustomize does."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"{folder}: kustomization fields not supported here: {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            resources += build(path)
        else:
            text = path.read_text(encoding="utf-8")
            resources += [document for document in yaml.safe_load_all(text) if document]
    for patch in kustomization.get("patches", []):
        _patch(resources, patch, folder)
    if "namespace" in kustomization:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        for resource in resources:
            for container in _containers(resource):
                _retag(container, image)
    return resources


def _patch(resources: list[Resource], patch: dict[str, Any], folder: Path) -> None:
    if set(patch) != {"target", "patch"} or set(patch["target"]) - {"kind", "name"}:
        raise ValueError(f"{folder}: only inline JSON 6902 patches on kind/name targets")
    target = patch["target"]
    operations = yaml.safe_load(patch["patch"])
    matched = [
        resource
        for resource in resources
        if resource["kind"] == target["kind"]
        and target.get("name", resource["metadata"]["name"]) == resource["metadata"]["name"]
    ]
    if not matched:
        raise ValueError(f"{folder}: patch target {target} matches nothing")
    for resource in matched:
        for operation in operations:
            _apply(resource, operation)


def _apply(document: Resource, operation: dict[str, Any]) -> None:
    """One JSON Patch (RFC 6902) operation: add, replace or remove."""
    *parents, last = [
        part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]
    ]
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = operation["op"]
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op == "add":
            node.insert(index, copy.deepcopy(operation["value"]))
        elif op == "replace":
            node[index] = copy.deepcopy(operation["value"])
        elif op == "remove":
            del node[index]
        else:
            raise ValueError(f"JSON patch op {op!r} not supported here")
        return
    if op in ("add", "replace"):
        if op == "replace" and last not in node:
            raise ValueError(f"replace of a missing member: {operation['path']}")
        node[last] = copy.deepcopy(operation["value"])
    elif op == "remove":
        del node[last]
    else:
        raise ValueError(f"JSON patch op {op!r} not supported here")


def _containers(resource: Resource) -> list[dict[str, Any]]:
    spec = resource.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    if resource["kind"] == "CronJob":
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _retag(container: dict[str, Any], image: dict[str, str]) -> None:
    name, _, tag = container["image"].partition(":")
    if name != image["name"]:
        return
    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


def _order(resource: Resource) -> tuple[int, str, str]:
    kind = resource["kind"]
    rank = ORDER_FIRST.index(kind) if kind in ORDER_FIRST else len(ORDER_FIRST)
    return (rank, kind, resource["metadata"]["name"])


def render(overlay: str) -> str:
    resources = sorted(build(HERE / "overlays" / overlay), key=_order)
    header = (
        f"# Rendered from deploy/k8s/overlays/{overlay} by deploy/k8s/render.py: do not edit.\n"
    )
    return header + "---\n".join(
        yaml.safe_dump(resource, sort_keys=True, width=100) for resource in resources
    )


def main(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Render deploy/k8s/overlays into rendered/.")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a rendered file is stale"
    )
    options = parser.parse_args(arguments)
    stale = []
    for overlay in OVERLAYS:
        path = RENDERED / f"{overlay}.yaml"
        text = render(overlay)
        if options.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        RENDERED.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run deploy/k8s/render.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
