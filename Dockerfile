# syntax=docker/dockerfile:1
# edgeagent container image: the agent in a virtualenv on a slim Python, running as a non-root
# user, with its queue on a volume at /var/lib/edgeagent (the root filesystem can be read-only).

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgeagent ./edgeagent
COPY sampler ./sampler
COPY otel ./otel
RUN python -m venv /opt/edgeagent \
    && /opt/edgeagent/bin/pip install --no-cache-dir . \
    && find /opt/edgeagent -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="edgeagent" \
      org.opencontainers.image.description="OpenTelemetry edge buffering agent: OTLP in, durable LMDB queue, OTLP out" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 edgeagent \
    && useradd --system --uid 10001 --gid edgeagent --home-dir /var/lib/edgeagent --shell /usr/sbin/nologin edgeagent \
    && mkdir -p /var/lib/edgeagent /etc/edgeagent \
    && chown edgeagent:edgeagent /var/lib/edgeagent
COPY --from=build /opt/edgeagent /opt/edgeagent
COPY packaging/container/config.yaml /etc/edgeagent/config.yaml
ENV PATH=/opt/edgeagent/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STATE_DIRECTORY=/var/lib/edgeagent
USER 10001:10001
VOLUME ["/var/lib/edgeagent"]
EXPOSE 4317 4318 13133 8888
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:13133/health/live', timeout=2).status == 200 else 1)"]
# exec form: the agent is PID 1's only child-free process and receives SIGTERM directly
ENTRYPOINT ["edgeagent"]
CMD ["run", "--config", "/etc/edgeagent/config.yaml"]
