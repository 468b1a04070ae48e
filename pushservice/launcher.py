"""Starts gunicorn with the project's settings, and a Redis when there is none."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from .embedded_redis import EmbeddedRedis, EmbeddedRedisError, answers_ping
from .errors import SettingsError
from .settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"pushservice: {exc}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    host = settings.service_host
    if not settings.enable_auth and not os.environ.get("SERVICE_HOST"):
        # Every endpoint is open without authentication: keep it to this machine unless
        # asked otherwise.
        host = env["SERVICE_HOST"] = "127.0.0.1"
    problem = _port_problem(host, settings.service_port)
    if problem:
        print(f"pushservice: cannot listen on {host}:{settings.service_port}: {problem}. "
              "Stop what uses it, or choose another port with SERVICE_PORT=...",
              file=sys.stderr)
        return 1
    embedded: EmbeddedRedis | None = None
    if settings.redis_sentinels:
        redis_note = (f"Redis: primary {settings.redis_sentinel_master!r} from the sentinels "
                      f"{', '.join(settings.redis_sentinels)}")
    elif settings.redis_configured:
        redis_note = f"Redis: {settings.redis_url_redacted} (configured)"
    elif answers_ping("localhost", 6379):
        redis_note = f"Redis: {settings.redis_url} (found on localhost:6379)"
    else:
        embedded = EmbeddedRedis(PROJECT_ROOT / settings.embedded_redis_dir)
        try:
            embedded.start()
        except EmbeddedRedisError as exc:
            print(f"pushservice: {exc}", file=sys.stderr)
            return 1
        env["REDIS_URL"] = embedded.url
        redis_note = (f"Redis: embedded redis-server {embedded.version()} at {embedded.url}, "
                      f"data in {embedded.data_dir} (AOF on)")
    shown = "localhost" if host == "127.0.0.1" else host
    print(f"pushservice: http://{shown}:{settings.service_port} (listening on {host}) with "
          f"{settings.workers} gevent worker(s); {redis_note}", flush=True)
    if not settings.enable_auth:
        print("pushservice: authentication is OFF (ENABLE_AUTH=false): every endpoint is "
              "open; set ENABLE_AUTH=true and JWT_SECRET to require tokens"
              + ("; only this machine can connect (SERVICE_HOST=0.0.0.0 opens it to the "
                 "network)" if host == "127.0.0.1" else ""), flush=True)
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=PROJECT_ROOT, env=env,
        start_new_session=True,  # terminal signals come to us; we decide what to forward
    )
    interrupts = 0

    def forward(signum, _frame):
        nonlocal interrupts
        if signum == signal.SIGINT:
            # First Ctrl-C: graceful stop (streams get their final frame); second: fast.
            interrupts += 1
            signum = signal.SIGTERM if interrupts == 1 else signal.SIGINT
        gunicorn.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGTTIN,
                   signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, forward)
    try:
        return gunicorn.wait()
    finally:
        if embedded is not None:
            embedded.stop()
            print("pushservice: embedded Redis stopped", flush=True)



def _port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (in use, not allowed), or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None
