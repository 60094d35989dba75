"""Reading a /metrics text with the Prometheus client's own parser."""

from __future__ import annotations

from collections import Counter

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str, family: str, *labels: str) -> Counter[tuple[str, ...]]:
    """Non-zero samples of one family of a /metrics text, keyed by the values of ``labels``
    (summed over the others).

    ``family`` is the name without ``_total`` (as the reference parser names counters).
    """
    out: Counter[tuple[str, ...]] = Counter()
    for parsed in text_string_to_metric_families(text):
        if parsed.name != family:
            continue
        for sample in parsed.samples:
            if sample.value and sample.name in (family, family + "_total"):
                out[tuple(sample.labels.get(name, "") for name in labels)] += sample.value
    return out
