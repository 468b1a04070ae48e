"""Fixtures for integration tests: the pipeline in-process, on a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pipeline import Pipeline


@pytest.fixture
def make_pipeline(redis_url: str) -> Iterator:
    """Factory of started pipelines on the test's database; all closed afterwards."""
    started: list[Pipeline] = []

    def make(url: str | None = None, **overrides) -> Pipeline:
        pipeline = Pipeline(url or redis_url, **overrides).start()
        started.append(pipeline)
        return pipeline

    yield make
    for pipeline in started:
        pipeline.close()
