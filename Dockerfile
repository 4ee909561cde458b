# syntax=docker/dockerfile:1
# edgeagent container image. The builder turns the project into a wheel (with the wheels of its
# dependencies), so the image holds exactly what the package declares: a package added to the
# project cannot be left out by a forgotten COPY. The runtime stage installs those wheels without
# the network and runs the agent as a non-root user.
#
#   docker run --read-only --tmpfs /tmp -v edgeagent-queue:/var/lib/edgeagent \
#       -e EDGEAGENT_UPSTREAM=http://collector:4318 -p 4317:4317 -p 4318:4318 edgeagent:0.1.0
#
# The root filesystem may be read-only: the queue lives on the volume at /var/lib/edgeagent and
# temporary files go to TMPDIR (/tmp), which belongs on a tmpfs.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
# the whole build context, less what .dockerignore keeps out (tests, benchmarks, caches)
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="edgeagent" \
      org.opencontainers.image.description="OpenTelemetry edge buffering agent: OTLP in, durable LMDB queue, OTLP out" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 edgeagent \
    && useradd --system --uid 10001 --gid edgeagent --home-dir /var/lib/edgeagent --shell /usr/sbin/nologin edgeagent \
    && mkdir -p /var/lib/edgeagent /var/lib/otelcol/queue /etc/edgeagent \
    && chown edgeagent:edgeagent /var/lib/edgeagent /var/lib/otelcol /var/lib/otelcol/queue \
    && chmod 0750 /var/lib/edgeagent /var/lib/otelcol /var/lib/otelcol/queue
# pip compiles the bytecode at install time: a read-only root never needs to write it
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/edgeagent \
    && /opt/edgeagent/bin/pip install --no-cache-dir --no-index --find-links /wheels edgeagent
COPY packaging/container/config.yaml /etc/edgeagent/config.yaml
ENV PATH=/opt/edgeagent/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STATE_DIRECTORY=/var/lib/edgeagent \
    TMPDIR=/tmp
USER 10001:10001
# /var/lib/otelcol: where otelcol configs keep their file_storage queue (its default directory), so
# such a config runs as it is; a volume mounted on /var/lib/otelcol/queue takes the agent's user
VOLUME ["/var/lib/edgeagent", "/var/lib/otelcol"]
EXPOSE 4317 4318 13133 8888
# /health/live answers while file_storage's compaction.on_start copies the queue (/health/ready does
# not); the start period still covers the copy (8 GiB at 10 MiB/s on a slow disk: 14 min). A refused
# connection passes: the agent is the first process, so it means a config without health_check on
# 13133 (as many otelcol configs), not an agent gone; one taken and never answered still fails.
HEALTHCHECK --interval=15s --timeout=3s --start-period=15m --retries=3 \
    CMD ["python", "-c", "import sys, urllib.error, urllib.request\ntry:\n    sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:13133/health/live', timeout=2).status == 200 else 1)\nexcept urllib.error.URLError as error:\n    sys.exit(0 if isinstance(error.reason, ConnectionRefusedError) else 1)"]
# exec form: the agent is PID 1 and receives SIGTERM directly
ENTRYPOINT ["edgeagent"]
CMD ["run", "--config", "/etc/edgeagent/config.yaml"]
