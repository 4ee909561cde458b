"""`status_code`: sample a trace with a span whose status code is one of `status_codes`."""

from __future__ import annotations

from opentelemetry.proto.trace.v1.trace_pb2 import Status

from sampler.policies.config import StatusCodeConfig
from sampler.policies.view import spans_of
from sampler.trace import Decision, Trace

CODES = {"UNSET": Status.STATUS_CODE_UNSET, "OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}


class StatusCode:
    def __init__(self, config: StatusCodeConfig):
        self.codes = frozenset(CODES[name] for name in config.status_codes)

    def evaluate(self, trace: Trace) -> Decision:
        codes = self.codes
        for span in spans_of(trace):
            if span.status.code in codes:
                return Decision.SAMPLED
        return Decision.NOT_SAMPLED
