#!/usr/bin/env python3
"""The otelcol-contrib binary the interoperability tests use, for benchmarks that compare against it.

Builds otelcol-contrib 0.165.0 with the OpenTelemetry Collector Builder on first use (needs Go;
several minutes), caches it outside the repository (see tests/helpers/otelcol.py) and prints its
path, so a benchmark or a shell can run it:

    "$(python bench/otelcol.py)" --config my-otelcol.yaml

In Python, `from bench.otelcol import binary` (or tests.helpers.otelcol.build) gives the same path.

Usage
    python bench/otelcol.py [--manifest]   (--manifest prints the builder manifest instead)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.otelcol import OtelcolUnavailable, build, manifest  # noqa: E402


def binary() -> Path:
    """The cached otelcol-contrib binary, built first if missing; progress goes to stderr."""
    return build(progress=lambda line: print(line, file=sys.stderr, flush=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", action="store_true", help="print the builder manifest and exit")
    if parser.parse_args().manifest:
        print(manifest(), end="")
        return 0
    try:
        print(binary())
    except OtelcolUnavailable as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
