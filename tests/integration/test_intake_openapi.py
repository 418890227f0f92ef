"""Property-based run of the OpenAPI document against the real feedback-intake server:
whatever schemathesis generates, the server answers without a 5xx and as documented."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from driftloop.intake import OPENAPI_PATH

pytestmark = pytest.mark.integration

schema = schemathesis.openapi.from_path(str(OPENAPI_PATH))


@schema.parametrize()
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_no_server_errors(case, intake_server):
    case.call_and_validate(base_url=intake_server.url, checks=[not_a_server_error])


def test_openapi_in_repo_is_what_the_server_serves(intake_server):
    import json

    import httpx

    served = httpx.get(f"{intake_server.url}/openapi.json").json()
    assert served == json.loads(OPENAPI_PATH.read_text())
    assert set(served["paths"]["/"]["post"]["requestBody"]["content"]) == {
        "application/json", "application/cloudevents+json", "application/cloudevents-batch+json"
    }
