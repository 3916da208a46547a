"""Schemathesis against the app's own OpenAPI schema, in process (ASGI, no network): valid and invalid
bodies for /inference and /report never produce a server error, and every answer matches the schema."""
from __future__ import annotations

import pytest
import schemathesis
from conftest import RaisingClassifier
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup, ServerError
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from serving.rest import Limits, create_rest_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def rest_schema(tiny_classifier):
    return schemathesis.openapi.from_asgi("/openapi.json", create_rest_app(tiny_classifier, Limits()))


# The operations are driven through hypothesis directly (schemathesis' pytest fixture loader does not
# support pytest 9). Bounded and reproducible: a fixed seed and count, no example database on disk.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("path", ["/inference", "/report"])
def test_fuzzed_requests_never_get_a_server_error(rest_schema, path, mode):
    operation = rest_schema[path]["POST"]
    seen = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=25, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def fuzz(case):
        seen.append(case.call_and_validate(checks=CHECKS).status_code)

    fuzz()
    assert seen, "no request was generated"
    assert all(status < 500 for status in seen)


def test_the_fuzzer_does_catch_server_errors(tiny_classifier):
    broken_app = create_rest_app(RaisingClassifier(tiny_classifier, lambda _: "broken on purpose"), Limits())
    broken = schemathesis.openapi.from_asgi("/openapi.json", broken_app)

    @given(case=broken["/inference"]["POST"].as_strategy(generation_mode=GenerationMode.POSITIVE))
    @settings(max_examples=10, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def fuzz(case):
        case.call_and_validate(checks=CHECKS)

    with pytest.raises(FailureGroup) as failures:
        fuzz()
    assert failures.group_contains(ServerError)
