"""Pure parts of manifest validation: OpenAPI → strict JSON schema, error locations."""

from __future__ import annotations

from jsonschema import Draft4Validator

from driftloop.manifests import (
    Schemas,
    _errors_for,
    _strict,
    crd_entries,
    openapi_entries,
    validate_documents,
)

CRD = {
    "kind": "CustomResourceDefinition",
    "spec": {
        "group": "example.com",
        "names": {"kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer"},
                                    "port": {"x-kubernetes-int-or-string": True},
                                    "note": {"type": "string", "nullable": True},
                                    "free": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                        "properties": {"a": {"type": "string"}},
                                    },
                                    "items": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {"name": {"type": "string"}},
                                        },
                                    },
                                },
                            }
                        },
                    }
                },
            },
            {"name": "v0", "served": False, "schema": {"openAPIV3Schema": {"type": "object"}}},
        ],
    },
}


def _validator():
    ((key, schema),) = list(crd_entries(CRD))
    assert key == "example.com/v1/Widget"
    return Draft4Validator(schema)


def test_crd_root_accepts_implicit_fields_and_rejects_unknown_ones():
    v = _validator()
    ok = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {
            "size": 1,
            "port": "http",
            "note": None,
            "free": {"anything": 1},
            "items": [{"name": "x"}],
        },
    }
    assert list(_errors_for(v, ok)) == []
    assert list(_errors_for(v, {**ok, "spec": {**ok["spec"], "port": 8080}})) == []


def test_error_paths_name_the_field():
    v = _validator()
    bad = {"spec": {"sise": 1, "items": [{"name": "x"}, {"nam": "y"}], "note": 3}}
    got = dict(_errors_for(v, bad))
    assert got["spec.sise"] == "unknown field"
    assert got["spec.items[1].nam"] == "unknown field"
    assert got["spec.size"] == "required field missing"
    assert "is not of type" in got["spec.note"]


def test_strict_keeps_explicit_additional_properties():
    s = _strict(
        {"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "string"}}
    )
    assert s["additionalProperties"] == {"type": "string"}
    assert _strict({"type": "object", "properties": {"a": {}}})["additionalProperties"] is False


def test_openapi_kinds_found_by_group_version_kind():
    doc = {
        "components": {
            "schemas": {
                "io.k8s.api.core.v1.ConfigMap": {
                    "x-kubernetes-group-version-kind": [
                        {"group": "", "version": "v1", "kind": "ConfigMap"}
                    ]
                },
                "io.k8s.api.apps.v1.Deployment": {
                    "x-kubernetes-group-version-kind": [
                        {"group": "apps", "version": "v1", "kind": "Deployment"}
                    ]
                },
            }
        }
    }
    assert dict(openapi_entries(doc)) == {
        "v1/ConfigMap": "io.k8s.api.core.v1.ConfigMap",
        "apps/v1/Deployment": "io.k8s.api.apps.v1.Deployment",
    }


def test_documents_locate_errors_by_origin_and_list_unavailable(tmp_path):
    import json

    (tmp_path / "crd").mkdir()
    ((key, schema),) = list(crd_entries(CRD))
    (tmp_path / "crd" / "w.json").write_text(json.dumps(schema))
    (tmp_path / "index.json").write_text(json.dumps({"kinds": {key: {"file": "crd/w.json"}}}))
    schemas = Schemas(tmp_path)
    origin = {"config.kubernetes.io/origin": "path: eventing/10-widget.yaml\n"}
    report = validate_documents(
        [
            {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "metadata": {"name": "w", "annotations": origin},
                "spec": {"size": "big"},
            },
            {"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Model", "metadata": {"name": "m"}},
        ],
        schemas,
    )
    (err,) = report.errors
    assert (err.file, err.kind, err.name, err.field) == (
        "eventing/10-widget.yaml",
        "Widget",
        "w",
        "spec.size",
    )
    assert str(err).startswith("eventing/10-widget.yaml: Widget/w: spec.size:")
    (u,) = report.unvalidated
    assert u.kind == "Model" and "Seldon" in u.reason
