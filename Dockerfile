# Cloud Run or any container host:
#   docker build -t pypi-index . && docker run -p 8080:8080 -e BUCKET_NAME=... pypi-index
# The container's disk is ephemeral (on Cloud Run, in memory): the bucket is the source
# of truth and each container fills /tmp/packages from it when it starts.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY main.py gunicorn.conf.py ./
COPY gcs_sync/ gcs_sync/

# Not root: the app writes only under /tmp.
RUN useradd --system --uid 10001 --no-create-home pypi
USER 10001

# TIER=prod: JSON logs, packages under /tmp/packages, GCS unless STORAGE_BACKEND says
# otherwise. BUCKET_NAME and PASSWORD_FILE come from the deployment.
# FORWARDED_ALLOW_IPS=*: on Cloud Run only its front end reaches the container, and it
# sets X-Forwarded-Proto itself (redirects stay https). Behind your own proxy, set its
# address instead. X-Forwarded-Host counts from no one (gcs_sync/web/forwarded.py).
ENV TIER=prod \
    PORT=8080 \
    FORWARDED_ALLOW_IPS=*
EXPOSE 8080
# gunicorn.conf.py binds 0.0.0.0:$PORT and sets workers (WEB_CONCURRENCY) and timeouts.
CMD ["gunicorn", "main:get_app()"]
