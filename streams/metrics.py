"""The worker's Prometheus metrics, served at ``/metrics`` (``streams/web.py``).

One registry per worker process. Counters and histograms are updated by the agent after each micro-batch;
consumer lag and readiness are read from Faust when Prometheus scrapes.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_start_time_seconds: restarts (a crash, the watchdog's exit) show
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

clicks = Counter("clickstream_clicks", "Messages read from the clicks topics", registry=REGISTRY)
predictions = Counter("clickstream_predictions", "Predictions sent", registry=REGISTRY)
dead_letters = Counter("clickstream_dead_letters", "Messages sent to the dead-letter topic, by reason",
                       ["reason"], registry=REGISTRY)
rekeyed = Counter("clickstream_rekeyed", "Unkeyed clicks sent round through the rekeyed topic", registry=REGISTRY)
skipped_offsets = Counter("clickstream_skipped_offsets", "Records of the clicks topics that Faust's consumer never "
                          "handed to the agent (a hole before a later offset): read from the log and handled "
                          "instead (streams/holes.py)", registry=REGISTRY)
dropped_offsets = Counter("clickstream_dropped_offsets", "Messages dropped on arrival: handled already in this "
                          "assignment (a seek back), or of a partition revoked meanwhile (its new owner reads it)",
                          ["reason"], registry=REGISTRY)
reseeks = Counter("clickstream_reseeks", "Partitions sought back to the next offset the agent expects after no click "
                  "reached it for a while though clicks waited (a safety net)", registry=REGISTRY)
commits = Counter("clickstream_commits", "Offset commits of the clicks topics made by the worker", registry=REGISTRY)
commit_waiting = Gauge("clickstream_commit_waiting_seconds", "Per assigned partition, how long its committed offset "
                       "has stood still while clicks wait behind it (0: none wait); the worker exits at "
                       "CLICKSTREAM_STALL_TIMEOUT_S", ["topic", "partition"], registry=REGISTRY)
expired_windows = Counter("clickstream_expired_windows", "Windows of idle users deleted", registry=REGISTRY)
forgotten_users = Counter("clickstream_forgotten_users", "Users forgotten on request: window and audience state "
                          "deleted", registry=REGISTRY)
dropped_forgotten = Counter("clickstream_dropped_forgotten_clicks", "Clicks of forgotten users dropped unread",
                            registry=REGISTRY)
batch_size = Histogram("clickstream_batch_size", "Messages per micro-batch",
                       buckets=(1, 8, 32, 64, 128, 256, 512, 1024), registry=REGISTRY)
stage_seconds = Histogram("clickstream_stage_seconds", "Time per micro-batch stage (wait: the oldest click's "
                          "wait for its batch; window: decode, validate, window updates; inference; send; "
                          "derived: category demand and audiences)",
                          ["stage"], buckets=LATENCY_BUCKETS_S, registry=REGISTRY)
click_to_prediction = Histogram("clickstream_click_to_prediction_seconds",
                                "From the worker reading a message to its batch's outputs handed to the producer",
                                buckets=LATENCY_BUCKETS_S, registry=REGISTRY)
model_info = Gauge("clickstream_model_info", "The model being served (value 1), by version", ["version"],
                   registry=REGISTRY)
ready = Gauge("clickstream_ready", "1 when the worker is ready (model warm, partitions assigned, tables "
              "recovered)", registry=REGISTRY)


def reason_label(reason: str) -> str:
    """A dead-letter reason without its particulars (bounded label values): 'absurd event time 5' -> 'absurd
    event time', 'undecodable: click: ...' -> 'undecodable'."""
    return re.split(r"[:\d]", reason, maxsplit=1)[0].strip() or "invalid"


LAG_METRIC = "clickstream_consumer_lag"


class LagCollector(Collector):
    """Consumer lag per assigned partition (high-water mark minus the next offset to read), at scrape time."""

    def __init__(self, lags: Callable[[], Iterator[tuple[str, int, int]]]) -> None:
        self.lags = lags

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily(LAG_METRIC, "Messages not yet read, per partition",
                                   labels=["topic", "partition"])
        for topic, partition, lag in self.lags():
            family.add_metric([topic, str(partition)], lag)
        yield family

# category demand and audiences (streams/derived.py)
demand_late = Counter("clickstream_demand_late", "Predictions (per window size) that came after their demand window "
                      "closed: not counted", registry=REGISTRY)
demand_records = Counter("clickstream_demand_records", "Closed demand window records sent (window x category x "
                         "partition), by completeness", ["complete"], registry=REGISTRY)
demand_open_windows = Gauge("clickstream_demand_open_windows", "Demand windows open in memory (all partitions and "
                            "sizes)", registry=REGISTRY)
audience_entries = Counter("clickstream_audience_entries", "Audience entries sent (resent: a re-delivered click "
                           "that had made its user enter)", ["kind"], registry=REGISTRY)
