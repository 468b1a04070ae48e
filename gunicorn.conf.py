"""Gunicorn settings, taken from the service's settings, and the worker hooks.

Run: ``gunicorn -c gunicorn.conf.py wsgi:app``. Invalid environment variables stop the
master at once, all of them listed.
"""

import glob
import os
import shutil
import sys
import tempfile

from pushservice.errors import SettingsError
from pushservice.logs import ACCESS_LOG_FORMAT
from pushservice.ops.capacity import ConnectionBudget
from pushservice.settings import Settings

try:
    settings = Settings.from_env()
except SettingsError as exc:
    sys.stderr.write(f"pushservice: {exc}\n")
    raise SystemExit(2) from None

# Prometheus multiprocess mode: every worker writes its values into this folder and
# /metrics adds them up. prometheus_client reads the variable when the workers import
# it, so it is set here, in the master, before any worker starts; the folder starts empty.
_metrics_dir = settings.prometheus_multiproc_dir or tempfile.mkdtemp(prefix="pushservice-metrics-")
shutil.rmtree(_metrics_dir, ignore_errors=True)
os.makedirs(_metrics_dir, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir

_host = settings.service_host
bind = [f"[{_host}]:{settings.service_port}" if ":" in _host else f"{_host}:{settings.service_port}"]
workers = settings.workers
# gunicorn's gevent worker; a new connection gets REQUEST_TIMEOUT_SECONDS, not the short
# keep-alive timeout, to send its first request (pushservice/worker.py).
worker_class = "pushservice.worker.PushWorker"
# Every stream is a greenlet: room for the whole instance's streams plus API calls.
worker_connections = settings.worker_connections
# Streams live for hours; gevent workers report liveness from their main loop.
timeout = 30
graceful_timeout = int(settings.shutdown_grace_seconds + 0.999)
# Short: a stopping worker waits for idle keep-alive connections to time out.
keepalive = 2
preload_app = False
# Several instances may share a host; none needs gunicorn's control socket.
control_socket_disable = True
# Room for a token of MAX_TOKEN_BYTES (8 KiB) in ?token= (the request line's largest
# possible limit) and in an Authorization or Cookie header; beyond, a JSON 414 or 431.
limit_request_line = 8190
limit_request_field_size = 16384
accesslog = "-"
errorlog = "-"
loglevel = settings.log_level
# Redacts ?token= values, bearer credentials and JWTs from every atom and error line, so
# the request line may be logged with its query string.
logger_class = "pushservice.logs.RedactingLogger"
access_log_format = ACCESS_LOG_FORMAT

# MAX_CONNECTIONS holds for the whole instance: each worker counts in a shared table.
_budget = ConnectionBudget(settings.max_connections, slots=settings.workers + 16)


def pre_fork(server, worker):
    worker.budget_slot = _budget.assign_slot()


def post_fork(server, worker):
    from pushservice.web.http_errors import install

    _budget.claim(worker.budget_slot, os.getpid())
    install()  # gunicorn's own error answers (unparsable requests) as JSON


def post_worker_init(worker):
    import gevent

    service = worker.wsgi.extensions["pushservice"]
    service.use_shared_budget(_budget)
    service.start()
    gevent.spawn(_close_streams_when_stopping, worker, service)


def _close_streams_when_stopping(worker, service):
    """SIGTERM, a restart or TTOU scale-down only flip ``worker.alive``: notice it and
    close every stream with a final frame before graceful_timeout kills the handlers."""
    import gevent

    while worker.alive:
        gevent.sleep(0.2)
    service.shutdown(spread_seconds=min(2.0, settings.shutdown_grace_seconds / 3))


def worker_int(worker):
    """SIGINT/SIGQUIT: the worker exits within 0.1 s; send the final frames now."""
    service = worker.wsgi.extensions.get("pushservice")
    if service is not None:
        service.shutdown(spread_seconds=0)


def worker_exit(server, worker):
    from pushservice.logs import close_handlers_before_exit

    service = worker.wsgi.extensions.get("pushservice") if hasattr(worker, "wsgi") else None
    if service is not None:
        service.stop()
    close_handlers_before_exit()


def child_exit(server, worker):
    _budget.release_slot(worker.budget_slot)
    # prometheus_client's mark_process_dead, without importing it (or anything that
    # imports ssl) into the master: workers forked later must patch gevent cleanly.
    for path in glob.glob(os.path.join(_metrics_dir, f"gauge_live*_{worker.pid}.db")):
        os.remove(path)


def on_exit(server):
    from pushservice.ops.instances import deregister_instance

    deregister_instance(settings)
    if not settings.prometheus_multiproc_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
