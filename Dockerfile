FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY app.py wsgi.py gunicorn.conf.py ./
COPY pushservice ./pushservice

RUN useradd --system --uid 10001 pushservice
USER pushservice

EXPOSE 8089
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('SERVICE_PORT', '8089'), timeout=2)"

CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
