"""Cluster manifests: kustomize build, then every document against its upstream schema.

The schemas are indexed once at setup (``python -m driftloop.manifests index``) from
the CRD YAMLs and OpenAPI documents the upstream projects publish; nothing here
describes a resource by hand. Validation is strict the way the API server's field
validation is: unknown fields are errors unless the schema preserves unknown fields.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / ".cache"

UNAVAILABLE_GROUPS: Mapping[str, str] = {
    "mlops.seldon.io": "Seldon Core v2 CRDs are not published to any reachable registry",
}
"""API groups whose schemas cannot be had from the registries: listed, not validated."""

ORIGIN_ANNOTATION = "config.kubernetes.io/origin"


class ManifestBuildError(Exception):
    """kustomize could not build a directory."""

    status = 422

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: kustomize build failed: {message}")
        self.path = path


@dataclass(frozen=True)
class ManifestError:
    """One schema violation, located by file and field path."""

    file: str
    kind: str
    name: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.kind}/{self.name}: {self.field or '<root>'}: {self.message}"


@dataclass(frozen=True)
class Unvalidated:
    """A document whose schema is not available (see ``UNAVAILABLE_GROUPS``)."""

    file: str
    api_version: str
    kind: str
    name: str
    reason: str


@dataclass
class Report:
    """Outcome of validating one kustomize directory."""

    directory: str
    documents: int = 0
    errors: list[ManifestError] = field(default_factory=list)
    unvalidated: list[Unvalidated] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


# --------------------------------------------------------------------------- index (pure)


def _strict(schema: Any) -> Any:
    """OpenAPI v3 schema → JSON schema with unknown fields rejected and nullable honoured."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out and "oneOf" not in out:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    open_ended = out.get("x-kubernetes-preserve-unknown-fields") or out.get(
        "x-kubernetes-embedded-resource"
    )
    if "properties" in out and "additionalProperties" not in out and not open_ended:
        out["additionalProperties"] = False
    return out


def gvk_key(api_version: str, kind: str) -> str:
    """Index key: ``<group>/<version>/<Kind>`` (core group: ``v1/<Kind>``)."""
    return f"{api_version}/{kind}"


_IMPLICIT_ROOT = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object"},
}


def crd_entries(doc: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, strict schema) for each served version of a CustomResourceDefinition."""
    spec = doc["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    for version in spec.get("versions", []):
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if schema is not None and version.get("served", True):
            root = dict(schema)
            # The API server always accepts these at a custom resource's root.
            root["properties"] = {**_IMPLICIT_ROOT, **root.get("properties", {})}
            yield gvk_key(f"{group}/{version['name']}", kind), _strict(root)


def openapi_entries(doc: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(key, component name) for each kind an OpenAPI v3 document defines."""
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            gv = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            yield gvk_key(gv, gvk["kind"]), name


def build_index(src: Path, out: Path, pins: Mapping[str, str]) -> dict[str, Any]:
    """Turn the fetched upstream files under ``src`` into one schema file per kind."""
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {
        "kinds": {},
        "sources": dict(pins),
        "unavailable": dict(UNAVAILABLE_GROUPS),
    }
    k8s_out = out / "k8s"
    k8s_out.mkdir(exist_ok=True)
    for path in sorted((src / "k8s").glob("*.json")):
        doc = json.loads(path.read_text())
        entries = list(openapi_entries(doc))
        if not entries:
            continue
        (k8s_out / path.name).write_text(json.dumps({"components": _strict(doc["components"])}))
        for key, name in entries:
            if name.startswith("io.k8s.apimachinery"):
                continue  # WatchEvent, DeleteOptions...: not manifests
            index["kinds"].setdefault(
                key,
                {
                    "file": f"k8s/{path.name}",
                    "ref": f"#/components/schemas/{name}",
                    "source": f"k8s {pins.get('k8s', '')}".strip(),
                },
            )
    crd_out = out / "crd"
    crd_out.mkdir(exist_ok=True)
    for area in sorted(p for p in src.iterdir() if p.is_dir() and p.name not in {"k8s", "func"}):
        for path in sorted([*area.glob("*.yaml"), *area.glob("*.yml")]):
            for doc in yaml.load_all(path.read_text(), Loader=_Loader):
                if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                    continue
                for key, schema in crd_entries(doc):
                    fname = key.replace("/", "_") + ".json"
                    (crd_out / fname).write_text(json.dumps(schema))
                    source = f"{area.name} {pins.get(area.name, '')}".strip()
                    index["kinds"][key] = {"file": f"crd/{fname}", "source": source}
    func_schema = src / "func" / "func_yaml-schema.json"
    if func_schema.exists():
        (out / "func_yaml-schema.json").write_text(func_schema.read_text())
        index["func_yaml"] = {
            "file": "func_yaml-schema.json",
            "source": f"func {pins.get('func', '')}",
        }
    (out / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True))
    return index


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loader that reads YAML 1.1's ``=`` (value tag) as the plain string it is."""


_Loader.add_constructor(
    "tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node)
)


# --------------------------------------------------------------------------- validation


def _field_path(parts: Iterable[object]) -> str:
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text


class Schemas:
    """The indexed upstream schemas: one validator per apiVersion/kind, built lazily."""

    def __init__(self, index_dir: Path) -> None:
        path = index_dir / "index.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: run `make setup` (infra/setup/70-schemas.sh)")
        self.dir = index_dir
        self.index: dict[str, Any] = json.loads(path.read_text())
        self._docs: dict[str, Any] = {}
        self._validators: dict[str, Validator] = {}

    @property
    def sources(self) -> dict[str, str]:
        return dict(self.index.get("sources", {}))

    def has(self, api_version: str, kind: str) -> bool:
        return gvk_key(api_version, kind) in self.index["kinds"]

    def _doc(self, file: str) -> Any:
        if file not in self._docs:
            self._docs[file] = json.loads((self.dir / file).read_text())
        return self._docs[file]

    def validator(self, api_version: str, kind: str) -> Validator | None:
        """A jsonschema validator for the kind, or None when the index lacks it."""
        from jsonschema import Draft4Validator

        key = gvk_key(api_version, kind)
        if key not in self._validators:
            entry = self.index["kinds"].get(key)
            if entry is None:
                return None
            doc = self._doc(entry["file"])
            schema = {"$ref": entry["ref"], **doc} if "ref" in entry else doc
            self._validators[key] = Draft4Validator(schema)
        return self._validators[key]

    @cached_property
    def func_yaml_validator(self) -> Validator:
        from jsonschema import Draft4Validator

        entry = self.index.get("func_yaml")
        if entry is None:
            raise FileNotFoundError("kn func schema missing from the index")
        return Draft4Validator(self._doc(entry["file"]))


def _errors_for(validator: Validator, doc: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(field path, message) per violation, naming the unexpected key for unknown fields."""
    for err in validator.iter_errors(doc):
        leaves = [err]
        while leaves and leaves[0].context:  # anyOf/oneOf: report the closest branch
            leaves = [min(leaves[0].context, key=lambda e: (-len(e.absolute_path), str(e.message)))]
        e = leaves[0]
        path = list(e.absolute_path)
        if e.validator == "additionalProperties" and isinstance(e.instance, dict):
            schema = e.schema if isinstance(e.schema, Mapping) else {}  # an object schema here
            known = set(schema.get("properties", {}))
            for extra in sorted(set(e.instance) - known):
                yield _field_path([*path, extra]), "unknown field"
            continue
        if e.validator == "required":
            missing = e.message.split("'")[1] if "'" in e.message else ""
            yield _field_path([*path, missing] if missing else path), "required field missing"
            continue
        yield _field_path(path), e.message


def _origin(doc: Mapping[str, Any], base: Path) -> str:
    ann = (doc.get("metadata") or {}).get("annotations") or {}
    raw = ann.get(ORIGIN_ANNOTATION)
    if not raw:
        return "?"
    origin = yaml.safe_load(raw) or {}
    rel = origin.get("path", "?")
    path = (base / rel).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def kustomize_build(directory: Path, kustomize: Path, *, origins: bool = False) -> str:
    """Rendered YAML of a kustomize directory; with ``origins`` each document names its file."""
    directory = directory.resolve()
    if not origins:
        cmd = [str(kustomize), "build", str(directory)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise ManifestBuildError(directory, proc.stderr.strip())
        return proc.stdout
    with tempfile.TemporaryDirectory(prefix="driftloop-kustomize-") as tmp:
        wrapper = Path(tmp)
        rel = Path(*[".."] * len(wrapper.parts[1:])) / directory.relative_to("/")
        (wrapper / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [str(rel)],
                    "buildMetadata": ["originAnnotations"],
                }
            )
        )
        cmd = [str(kustomize), "build", "--load-restrictor", "LoadRestrictionsNone", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise ManifestBuildError(directory, proc.stderr.strip())
        return _absolute_origins(proc.stdout, wrapper)


def _absolute_origins(rendered: str, base: Path) -> str:
    docs = [d for d in yaml.load_all(rendered, Loader=_Loader) if d]
    for d in docs:
        ann = d.setdefault("metadata", {}).setdefault("annotations", {})
        if ORIGIN_ANNOTATION in ann:
            ann[ORIGIN_ANNOTATION] = yaml.safe_dump({"path": _origin(d, base)})
    return yaml.safe_dump_all(docs, sort_keys=False)


def validate_documents(
    docs: Iterable[Mapping[str, Any]], schemas: Schemas, *, directory: str = ""
) -> Report:
    """Validate rendered documents (pure apart from the schema cache)."""
    report = Report(directory=directory)
    for doc in docs:
        if not doc:
            continue
        report.documents += 1
        meta = doc.get("metadata") or {}
        ann = meta.get("annotations") or {}
        file = (
            (yaml.safe_load(ann[ORIGIN_ANNOTATION]) or {}).get("path", "?")
            if (ORIGIN_ANNOTATION in ann)
            else "?"
        )
        api_version, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
        name = str(meta.get("name", "?"))
        report.kinds[gvk_key(api_version, kind)] = (
            report.kinds.get(gvk_key(api_version, kind), 0) + 1
        )
        group = api_version.split("/")[0] if "/" in api_version else ""
        if group in UNAVAILABLE_GROUPS and not schemas.has(api_version, kind):
            report.unvalidated.append(
                Unvalidated(file, api_version, kind, name, UNAVAILABLE_GROUPS[group])
            )
            continue
        validator = schemas.validator(api_version, kind)
        if validator is None:
            report.errors.append(
                ManifestError(
                    file, kind, name, "apiVersion", f"no upstream schema for {api_version} {kind}"
                )
            )
            continue
        clean = _without_origin(doc)
        for path, message in _errors_for(validator, clean):
            report.errors.append(ManifestError(file, kind, name, path, message))
    return report


def _without_origin(doc: Mapping[str, Any]) -> dict[str, Any]:
    meta = dict(doc.get("metadata") or {})
    ann = {k: v for k, v in (meta.get("annotations") or {}).items() if k != ORIGIN_ANNOTATION}
    if ann:
        meta["annotations"] = ann
    else:
        meta.pop("annotations", None)
    return {**doc, "metadata": meta}


def validate_directory(directory: Path, schemas: Schemas, kustomize: Path) -> Report:
    """kustomize build of ``directory`` and every rendered document against its schema."""
    rendered = kustomize_build(directory, kustomize, origins=True)
    docs = list(yaml.load_all(rendered, Loader=_Loader))
    try:
        label = str(directory.resolve().relative_to(ROOT))
    except ValueError:
        label = str(directory)
    return validate_documents(docs, schemas, directory=label)


def _rfc3339(value: object) -> str:
    """YAML timestamps (func.yaml's ``created``) as the RFC 3339 strings kn func reads."""
    if isinstance(value, date | time):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def validate_func_yaml(path: Path, schemas: Schemas) -> list[ManifestError]:
    """A function's func.yaml against kn func's published JSON schema."""
    data = json.loads(json.dumps(yaml.safe_load(path.read_text()) or {}, default=_rfc3339))
    try:
        label = str(path.resolve().relative_to(ROOT))
    except ValueError:
        label = str(path)
    return [
        ManifestError(label, "func.yaml", str(data.get("name", "?")), p, m)
        for p, m in _errors_for(schemas.func_yaml_validator, data)
    ]


def default_targets() -> list[Path]:
    """Every kustomize directory driftloop ships (overlays, their bases, alternatives)."""
    found = {
        p.parent
        for top in ("eventing", "infra", "seldon")
        for p in (ROOT / top).rglob("kustomization.yaml")
    }
    return sorted(found)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m driftloop.manifests")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_index = sub.add_parser("index", help="index fetched upstream schemas")
    p_index.add_argument("--src", type=Path, required=True)
    p_index.add_argument("--out", type=Path, required=True)
    p_index.add_argument("--pins", type=Path, required=True)
    p_val = sub.add_parser("validate", help="kustomize build + schema validation")
    p_val.add_argument("dirs", nargs="*", type=Path)
    p_val.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    if args.cmd == "index":
        pins = dict(
            line.split(maxsplit=1) for line in args.pins.read_text().splitlines() if line.strip()
        )
        index = build_index(args.src, args.out, pins)
        print(f"indexed {len(index['kinds'])} kinds into {args.out}")
        return 0
    schemas = Schemas(args.cache / "schemas" / "index")
    failed = False
    for d in args.dirs or default_targets():
        report = validate_directory(d, schemas, args.cache / "bin" / "kustomize")
        for e in report.errors:
            print(e)
        for u in report.unvalidated:
            print(f"{u.file}: {u.kind}/{u.name}: not validated: {u.reason}")
        print(f"{report.directory}: {report.documents} documents, {len(report.errors)} errors")
        failed |= not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main())
