"""Test-process setup that must happen before anything else is imported.

The service's hub and reader are gevent greenlets doing Redis I/O; integration tests run
them in the test process, so the process is cooperative like a gunicorn gevent worker.
Everything else (subprocesses, HTTP clients, the browser driver) works unchanged on
gevent's sockets.
"""

from gevent import monkey

monkey.patch_all()
