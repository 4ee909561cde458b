"""`tail_sampling: shared_state: redis:`, the seed's `redis:` block in otelcol's snake_case.

| seed (tail-sampling-selector)  | here                                                       |
|--------------------------------|------------------------------------------------------------|
| `redis.url`                    | `url` (redis:// or rediss:// for TLS; a /N path selects    |
|                                | database N; redis-py's query options apply, but for the    |
|                                | replies' type, the timeouts and the pool size, set here)   |
| `redis.password`               | `password` (or in the url; never logged nor shown)         |
| `redis.poolSize`               | `pool_size`                                                |
| `redis.connectionTimeoutSecs`  | `connection_timeout` (a duration: `5s`)                    |
| (none)                         | `operation_timeout`, `key_prefix`, `ttl`, `flush_interval`,|
|                                | `send_batch_size` (edgeagent)                              |

Kept in its own module, free of the Redis client, so that loading and validating a config
stays cheap and pure.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from otel.durations import Duration
from sampler.settings import Settings


def shown_url(url: str) -> str:
    """The URL as logs, errors and status show it: a password in it is replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


class SharedStateConfig(Settings):
    """Where decisions are shared, and for how long."""

    url: str = Field(repr=False)  # it may hold the password
    password: str | None = Field(None, repr=False)
    pool_size: int = Field(10, gt=0)
    connection_timeout: Duration = Field(5.0, gt=0)
    # every lookup waits for Redis on the ingest path: keep it short; a timeout counts as an outage
    operation_timeout: Duration = Field(0.25, gt=0)
    key_prefix: str = "edgeagent:decision:"
    # late spans arrive within minutes of their trace's decision (rebalances, consumer lag), or
    # hours later from an edge that was offline; an hour covers the first with margin and costs
    # about 100 bytes per trace in Redis (1,000 traces/s: ~360 MB)
    ttl: Duration = Field(3600.0, ge=1)
    flush_interval: Duration = Field(0.005, gt=0)  # decisions wait at most this long to share one round trip
    send_batch_size: int = Field(1000, gt=0)  # or leave as soon as this many wait

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"url {shown_url(url)!r} must start with redis:// (or rediss:// for TLS)")
        try:
            _ = parts.port  # raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError(f"url {shown_url(url)!r} has an invalid port") from None
        if not parts.hostname:
            raise ValueError(f"url {shown_url(url)!r} names no host (e.g. redis://redis-master:6379)")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise ValueError(f"url {shown_url(url)!r}: the path selects a database by number (e.g. /0)")
        return url

    @model_validator(mode="after")
    def _check(self) -> SharedStateConfig:
        if self.password and urlsplit(self.url).password:
            raise ValueError("the password is given twice, in url and in password: keep one")
        return self


class SharedStateBackends(Settings):
    """`shared_state:` names its store; Redis is the one there is."""

    redis: SharedStateConfig
