"""Property-based fuzzing of the served API against its own OpenAPI document (Schemathesis),
on both backends: valid and invalid requests to every operation, with a tenant key; no
response is a 5xx and every response matches the spec (status code, content type, headers,
body schema). Bounded: a fixed number of examples per operation (~20 s per backend)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.server import create_key, serve

pytestmark = pytest.mark.timeout(180)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 20


def fuzz(
    operation: schemathesis.APIOperation,
    base_url: str,
    headers: dict[str, str],
    mode: GenerationMode,
    **fixed: dict[str, str],
) -> int:
    calls = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def run(case: schemathesis.Case) -> None:
        nonlocal calls
        response = case.call(base_url=base_url, headers=headers, timeout=15)
        case.validate_response(response, checks=CHECKS)
        calls += 1

    try:
        run()
    except Unsatisfiable:
        # negative mode for an operation with no parameters or body: nothing can be made invalid
        assert (
            mode is GenerationMode.NEGATIVE
            and not operation.body
            and not any(True for _ in operation.iter_parameters())
        ), operation.label
    return calls


def test_every_operation_answers_within_its_spec(db_url: str, tmp_path: Path) -> None:
    token = create_key(db_url, "acme")
    headers = {"Authorization": f"Bearer {token}"}
    with serve(db_url, tmp_path / "serve.log", ["--workers", "1"]) as server:
        # a real run, so the per-run operations also answer 200 and not only 404
        run_id = httpx.post(
            f"{server.url}/v1/runs", json={"agent": "steps", "input": {"n": 2}}, headers=headers
        ).json()["run_id"]
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 11
        calls = 0
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                calls += fuzz(operation, server.url, headers, mode)
            if "{run_id}" in operation.path:
                calls += fuzz(
                    operation,
                    server.url,
                    headers,
                    GenerationMode.POSITIVE,
                    path_parameters={"run_id": run_id},
                )
        assert calls >= len(operations) * 2
        log = (tmp_path / "serve.log").read_text()
        assert "Traceback" not in log, log
