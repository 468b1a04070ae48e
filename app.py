"""Local development server: one process, gevent's WSGI server, no gunicorn.

``python app.py`` serves on SERVICE_PORT. For production use gunicorn.conf.py.
"""

from gevent import monkey

monkey.patch_all()

from gevent.pywsgi import WSGIHandler, WSGIServer

from pushservice import create_app
from pushservice.logs import redact


class RedactingHandler(WSGIHandler):
    """gevent's request handler, whose access-log line never shows a token."""

    def format_request(self) -> str:
        return redact(super().format_request())


def make_server(app, listener, **kwargs) -> WSGIServer:
    """The development server for ``app`` on ``listener`` (an address or a socket)."""
    return WSGIServer(listener, app, handler_class=RedactingHandler, **kwargs)


def main() -> None:
    app = create_app()
    service = app.extensions["pushservice"]
    service.start()
    port = service.settings.service_port
    print(f"pushservice (development server) on http://127.0.0.1:{port}", flush=True)
    make_server(app, ("0.0.0.0", port)).serve_forever()


if __name__ == "__main__":
    main()
