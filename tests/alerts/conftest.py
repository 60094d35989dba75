"""The alerting tests use the synthetic workloads of the read-side tests."""

from __future__ import annotations

import sys
from pathlib import Path

# The OTLP builders and the known workload beside the read-side tests.
sys.path.insert(0, str(Path(__file__).parent.parent / "queries"))
