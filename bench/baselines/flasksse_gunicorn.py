"""Gunicorn settings for the flask-sse baseline (workers and bind come from the command line).

Given with ``-c`` so gunicorn does not pick up the service's ./gunicorn.conf.py.
"""

worker_class = "gevent"
# Every stream is a greenlet; the default 1,000 would cap the connection count.
worker_connections = 20000
backlog = 4096
timeout = 300
graceful_timeout = 3
loglevel = "warning"
