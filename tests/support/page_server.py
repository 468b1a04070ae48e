"""A tiny HTTP server on 127.0.0.1 that serves fixed pages to a browser under test."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

Content = str | Callable[[], str]


class PageServer:
    """Serves ``pages`` (path -> HTML text) as ``text/html; charset=utf-8``; 404 otherwise.
    A page may be a function, called for each request (a page's own backend, minting a
    token when the page asks for it).

    Runs in a daemon thread of the test process on a free port; ``origin`` is what a
    browser sends as the page's Origin. Every request path is recorded in ``requests``.
    Pages are sent with ``Cache-Control: no-cache`` (revalidated, never stale, and still
    allowed into the back/forward cache, which ``no-store`` would bar). Use as a context
    manager, or call ``close()``.
    """

    def __init__(self, pages: Mapping[str, str] | None = None) -> None:
        self.pages: dict[str, tuple[Content, str]] = {}
        self.requests: list[str] = []
        for path, html in (pages or {}).items():
            self.add(path, html)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path == "/favicon.ico":
                    self.send_response(204)  # no console error for the icon browsers ask for
                    self.end_headers()
                    return
                page = server.pages.get(self.path.split("?", 1)[0])
                if page is None:
                    self.send_error(404)
                    return
                content, content_type = page
                body = (content() if callable(content) else content).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # requests are recorded above; keep the test output clean

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """Absolute URL of ``path``."""
        return self.origin + path

    def add(self, path: str, content: Content,
            content_type: str = "text/html; charset=utf-8") -> None:
        """Serve ``content`` (text, or a function that returns it) at ``path`` from now on."""
        self.pages[path] = (content, content_type)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
