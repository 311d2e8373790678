"""Shared fixtures: a real MQTT broker on loopback; PostgreSQL and an S3 server for the scale-out tests.

`EDGECUT_EMBEDDED_BROKER=mosquitto|iotcore|auto` picks it (auto: mosquitto when installed, else iotcore);
`.ci/run` runs the broker-dependent tests (marker `broker`) once per broker.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from edgecut.broker import BROKER_ENV, EmbeddedBroker
from tests.support.brokers import broker_kind
from tests.support.postgres import PostgresServer
from tests.support.postgres import missing_reason as postgres_missing
from tests.support.s3_server import S3Server, use_credentials

# Two cores: keep torch/onnxruntime from oversubscribing when tests run beside each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_report_header() -> str:
    return f"MQTT broker: {broker_kind()} ({BROKER_ENV}={os.environ.get(BROKER_ENV, 'auto')})"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # the header is hidden under -q; CI's log must still say which broker this run used
    terminalreporter.write_line(pytest_report_header())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that starts a broker is marked `broker`, so it can be rerun on the other broker."""
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


# In CI a skip in these categories is a failure: a runner without PostgreSQL, the TLS broker
# (mosquitto), the deploy tools or chromium would otherwise go green having tested none of it.
_TESTS = Path(__file__).parent
REQUIRED_IN_CI = (
    _TESTS / "browser",
    _TESTS / "integration" / "deploy",
    _TESTS / "integration" / "fleet" / "test_tls.py",
    _TESTS / "integration" / "fleet" / "test_shared_subscriptions.py",
)


def required_in_ci(item: pytest.Item) -> bool:
    path = Path(str(item.fspath))
    if os.environ.get("EDGECUT_BENCH_SMOKE") and item.get_closest_marker("bench"):
        return True  # `make test-bench` (arm64 included) must run them all, not skip them
    return "postgres" in getattr(item, "fixturenames", ()) or any(
        path == p or path.is_relative_to(p) for p in REQUIRED_IN_CI
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and os.environ.get("CI", "").lower() in ("1", "true", "yes") and required_in_ci(item):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where this must run: {reason}"


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh broker per test; tests may stop() and start() it again on the same port."""
    b = EmbeddedBroker(prefer=broker_kind()).start()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; each test takes a fresh database from it."""
    reason = postgres_missing()
    if reason:
        pytest.skip(reason)
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One S3-compatible server (moto) for the session; each test takes a fresh bucket from it."""
    use_credentials()
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()
