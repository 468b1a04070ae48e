"""Helpers for the pushservice test suite: real servers, an SSE client and a browser.

Nothing here is a test. Each module owns one thing:

- ``redis_server``: a real redis-server on a free loopback port, stoppable and restartable.
- ``gunicorn_server``: the service itself under gunicorn with gevent workers.
- ``sse_client``: a small blocking SSE client that shows frames exactly as they arrive.
- ``browser`` and ``page_server``: headless Chromium driving a page served from loopback.
- ``waiting``, ``ports``, ``processes``, ``prerequisites``: the small pieces they share.
"""
