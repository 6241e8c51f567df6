"""The API fuzzed by schemathesis against the OpenAPI description a real server process serves.

Three runs, each bounded (``-n`` examples per operation, a fixed seed, no shrinking):

1. the device routes, every request signed as a real enrolled device (``fuzz_hooks.py``);
2. every route with no credentials at all;
3. the admin routes with an administrator token.

Each must report 0 failures of: server errors, undocumented status codes, response schema,
content type, invalid data accepted, valid data rejected, the Allow header of a 405 (and a
method the schema does not list). ``JCSTATE_FUZZ_EXAMPLES`` raises the examples per operation.
The counts of each run are printed (``pytest -s``) and kept in ``fuzz-*.json`` under the tmp dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import live
import pytest

from jcstate.agent.client import Client
from jcstate.agent.identity import Identity

HERE = Path(__file__).resolve().parent
ST = Path(sys.executable).with_name("schemathesis")
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "response_schema_conformance",
        "content_type_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
        "unsupported_method",
        "allow_header_conformance",
    ]
)
EXAMPLES = int(os.environ.get("JCSTATE_FUZZ_EXAMPLES", "25"))
SEED = 20261206

pytestmark = pytest.mark.skipif(not ST.exists(), reason="schemathesis is not installed")


def _fuzz(url: str, report: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    command = [
        str(ST),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--no-shrink",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *args,
    ]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(HERE), **(env or {})},
        cwd=report.parent,
    )
    assert report.exists(), f"schemathesis did not report:\n{proc.stdout[-4000:]}{proc.stderr}"
    result = json.loads(report.read_text())
    result["output"] = proc.stdout
    return result


def _counts(name: str, result: dict) -> str:
    ops, cases = result["operations"], result["test_cases"]
    return (
        f"{name}: {ops['tested']} operations, {cases['generated']} test cases, "
        f"{cases['unique_failures']} failures, {result['errors'] and len(result['errors'])} errors"
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("fuzz")
    data = tmp / "data"
    server = live.ServerProcess(
        ["--data", str(data), "--max-wait", "1", "--max-in-flight", "0"], live.free_port()
    ).start()
    try:
        device_state = tmp / "device"
        client = Client(server.url, Identity(str(device_state)))
        connect_key = (data / "connect-key").read_text().strip()
        answer = client.enroll(
            connect_key, {"hostname": "fuzzed", "os": "linux", "osVersion": "12", "arch": "x86_64"}
        )
        client.identity.save_device(answer["id"], server.url)
        client.close()
        yield server, (data / "admin-token").read_text().strip(), device_state, tmp
    finally:
        server.kill()


def test_the_api_passes_schemathesis(served) -> None:
    server, token, device_state, tmp = served
    runs = [
        (
            "signed device",
            _fuzz(
                server.url,
                tmp / "fuzz-device.json",
                "--include-tag",
                "device",
                env={"SCHEMATHESIS_HOOKS": "fuzz_hooks", "JCSTATE_FUZZ_DEVICE": str(device_state)},
            ),
        ),
        ("no credentials", _fuzz(server.url, tmp / "fuzz-anonymous.json")),
        (
            "administrator",
            _fuzz(
                server.url,
                tmp / "fuzz-admin.json",
                "--exclude-tag",
                "device",
                "--header",
                f"Authorization: Bearer {token}",
            ),
        ),
    ]
    for name, result in runs:
        print(_counts(name, result))
    for name, result in runs:
        assert result["test_cases"]["generated"] > 0, name
        assert result["operations"]["tested"] > 0, name
        assert result["test_cases"]["unique_failures"] == 0 and not result["errors"], (
            f"{_counts(name, result)}\n{result['output'][-12000:]}"
        )
