"""Deliveries one row each, as the latency and edge rollups sum them
(:mod:`.latency_rollup`, :mod:`.edge_rollup`)."""

from __future__ import annotations

from ._log_bins import BIN_SQL

__all__ = ["PER_DELIVERY"]

# Deliveries ({deliveries}: the columns of span_deliveries, raw) one row each, as both
# rollups sum them: group, outcome (as the raw reads give them), the bins of processing
# and queue wait.
PER_DELIVERY = f"""
SELECT start_time, end_time, publish_time, message_id, service_name,
       coalesce(consumer_group, service_name) AS consumer_group, handler, name, event_type,
       destination,
       coalesce(outcome, CASE WHEN status_code = 'error' THEN 'error' ELSE 'ok' END)
           AS outcome,
       {BIN_SQL.format(v="(epoch_ns(end_time) - epoch_ns(start_time))")} AS processing,
       {BIN_SQL.format(v="(epoch_ns(start_time) - epoch_ns(publish_time))")} AS queue_wait
FROM ({{deliveries}})
"""
