"""Local development server: one process, gevent's WSGI server, no gunicorn.

``python app.py`` serves on SERVICE_PORT. For production use gunicorn.conf.py.
"""

from gevent import monkey

monkey.patch_all()

from gevent.pywsgi import WSGIServer

from pushservice import create_app


def main() -> None:
    app = create_app()
    service = app.extensions["pushservice"]
    service.start()
    port = service.settings.service_port
    print(f"pushservice (development server) on http://127.0.0.1:{port}", flush=True)
    WSGIServer(("0.0.0.0", port), app).serve_forever()


if __name__ == "__main__":
    main()
