"""The recorded Redis replies that unit tests rely on still match a live server of each
version (tests/support/redis_replies.py)."""

from __future__ import annotations

import pytest

from pushservice.store.messages import parse_stream_info
from tests.support import redis_replies

pytestmark = pytest.mark.redis_versions


def _recorded_for(version: str) -> dict:
    major = version.split(".")[0]
    matching = [v for v in redis_replies.load() if v.split(".")[0] == major]
    if not matching:
        pytest.fail(f"no replies recorded for Redis {major}.x: record them with "
                    "python -m tests.support.redis_replies", pytrace=False)
    return redis_replies.load()[max(matching)]


@pytest.mark.parametrize("scenario", sorted(redis_replies.SCENARIOS))
def test_a_live_server_reports_the_fields_that_were_recorded(redis_server, scenario):
    recorded = _recorded_for(redis_server.version)[scenario]["xinfo"]

    live = redis_replies.SCENARIOS[scenario](redis_server.url(redis_server.fresh_db()))["xinfo"]

    assert sorted(live) == sorted(recorded)
    for field in redis_replies.FIELDS_READ:
        assert (field in live) == (field in recorded)
    first = live.get(b"first-entry")
    if first:
        assert [name for name in first[1][::2]] == [b"h", b"m", b"p", b"b"]


@pytest.mark.parametrize("scenario", ["trimmed_by_length", "trimmed_by_age"])
def test_trims_leave_max_deleted_entry_id_alone_on_redis_7(redis_server, scenario):
    # Why the service records each entry's predecessor itself.
    live = redis_replies.SCENARIOS[scenario](redis_server.url(redis_server.fresh_db()))
    info = parse_stream_info("e", live["xinfo"])
    if redis_server.version.startswith("6."):
        assert info.max_deleted is None and info.entries_added is None
    else:
        assert info.max_deleted == (0, 0)
        assert info.entries_added == len(live["published"]) > info.length
