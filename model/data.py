"""From historical logs to clean, time-ordered per-user event sequences and a leak-free time split.

The logs are read by the same readers as the CLI (:mod:`core.logs`). Events are held as flat numpy columns
sorted by (user, time); ``user_starts`` marks where each user's events begin.
"""
from __future__ import annotations

import dataclasses
import hashlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from core.errors import InputError
from core.events import EVENT_TYPE_CODES, UNKNOWN
from core.logs import ColumnMapping, ReadReport, read_log
from core.records import Click
from model.window import Window

SESSION_GAP_MS = 30 * 60 * 1000


@dataclasses.dataclass
class EventLog:
    """Events of many users as columns, sorted by (user, event time)."""

    user_ids: np.ndarray  # object (str), one per event
    category_ids: np.ndarray  # object (str)
    event_types: np.ndarray  # int8, stable code of core.events
    times_ms: np.ndarray  # int64
    user_starts: np.ndarray  # int64, start offset of each user's run, plus a final len(events)
    cleaning: dict[str, int] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times_ms)

    @property
    def n_users(self) -> int:
        return len(self.user_starts) - 1

    def fingerprint(self) -> str:
        """A short hash of the events, recorded in the model manifest."""
        h = hashlib.sha256()
        for column in (self.times_ms, self.event_types):
            h.update(np.ascontiguousarray(column).tobytes())
        h.update("\x1f".join(self.category_ids[:: max(1, len(self) // 10000)].tolist()).encode())
        return f"{len(self)}-{h.hexdigest()[:16]}"


def clean_events(clicks: Iterable[Click], *, time_margin_ms: int = 24 * 3600 * 1000) -> EventLog:
    """Drop exact duplicates, unknown event types and outlying timestamps; sort by (user, time).

    Timestamps further than ``time_margin_ms`` outside the 0.1 %-99.9 % quantile range of the log are
    dropped (the Taobao data holds a few events dated months away from its 9 days).

    The clicks are read once and kept as integer columns (each distinct id, category, item and event type
    string is held once, the events as codes into them: ~21 bytes per event), so a log of millions of clicks,
    from files or a topic, never lives as millions of Python objects.
    """
    strings: tuple[dict[str, int], ...] = ({}, {}, {}, {})  # users, items, categories, event types
    users, items, cats, kinds = strings
    columns = tuple(array("i") for _ in strings)
    times = array("q")
    for c in clicks:
        for table, column, value in zip(strings, columns, (c.user_id, c.item_id, c.category_id, c.event_type)):
            column.append(table.setdefault(value, len(table)))
        times.append(c.event_time_ms)
    n = len(times)
    codes = [np.frombuffer(column, dtype=np.int32) if n else np.zeros(0, np.int32) for column in columns]
    t_all = np.frombuffer(times, dtype=np.int64) if n else np.zeros(0, np.int64)
    stats = {"read": n, "duplicates": 0, "unknown_type": 0, "outlying_time": 0}
    # exact duplicates (every field equal): the first one stays
    order = np.lexsort((np.arange(n), t_all, *codes[::-1]))
    key = np.stack([*codes, t_all])[:, order] if n else np.zeros((5, 0), np.int64)
    repeat = np.zeros(n, dtype=bool)
    repeat[order[1:]] = (key[:, 1:] == key[:, :-1]).all(axis=0)
    stats["duplicates"] = int(repeat.sum())
    type_of_kind = np.array([EVENT_TYPE_CODES.get(k, UNKNOWN) for k in kinds], dtype=np.int8)
    event_types = type_of_kind[codes[3]] if n else np.zeros(0, np.int8)
    unknown = ~repeat & (event_types == UNKNOWN)
    stats["unknown_type"] = int(unknown.sum())
    rows = np.flatnonzero(~repeat & ~unknown)
    t = t_all[rows]
    keep = np.ones(len(t), dtype=bool)
    if len(t):
        lo, hi = np.quantile(t, [0.001, 0.999])
        keep = (t >= lo - time_margin_ms) & (t <= hi + time_margin_ms)
    stats["outlying_time"] = int((~keep).sum())
    rows = rows[keep]
    user_names = np.asarray(list(users), dtype=object)
    cat_names = np.asarray(list(cats), dtype=object)
    log = _sorted_log(user_names[codes[0][rows]] if n else np.zeros(0, object),
                      cat_names[codes[2][rows]] if n else np.zeros(0, object), event_types[rows], t_all[rows])
    stats["kept"] = len(log)
    log.cleaning = stats
    return log


def _sorted_log(users: np.ndarray, cats: np.ndarray, types: np.ndarray, times: np.ndarray) -> EventLog:
    user_codes = np.unique(users, return_inverse=True)[1]
    order = np.lexsort((np.arange(len(times)), times, user_codes))  # stable: file order breaks time ties
    user_codes = user_codes[order]
    boundaries = np.flatnonzero(np.diff(user_codes)) + 1 if len(order) else np.array([], dtype=np.int64)
    starts = np.concatenate([[0], boundaries, [len(order)]]).astype(np.int64) if len(order) else \
        np.array([0], dtype=np.int64)
    return EventLog(users[order], cats[order], types[order], times[order], starts)


@dataclasses.dataclass(frozen=True)
class TimeSplit:
    """Targets before ``val_start_ms`` train, before ``test_start_ms`` validate, the rest test."""

    val_start_ms: int
    test_start_ms: int
    by: str = "time range"  # or "event times": how the cut points were chosen

    @classmethod
    def by_fraction(cls, log: EventLog, test: float = 0.2, val: float = 0.1) -> TimeSplit:
        """Last ``test`` of the time range is test, the ``val`` before it validation.

        A log whose time range has a gap (REES46's sample: hours of October 1, then minutes of November 1)
        can leave a slice nearly empty; when a slice holds under a tenth of its share of the events, the cut
        points are quantiles of the event times instead (the last ``test`` of the events is test). Either
        way everything in the test slice is later than everything the model was trained on.
        """
        lo, hi = int(log.times_ms.min()), int(log.times_ms.max())
        span = hi - lo
        split = cls(val_start_ms=int(hi - span * (test + val)), test_start_ms=int(hi - span * test))
        n = len(log)
        n_test = int(np.sum(log.times_ms >= split.test_start_ms))
        n_val = int(np.sum((log.times_ms >= split.val_start_ms) & (log.times_ms < split.test_start_ms)))
        if n_test >= 0.1 * test * n and n_val >= 0.1 * val * n:
            return split
        q_val, q_test = np.quantile(log.times_ms, [1.0 - test - val, 1.0 - test], method="higher")
        return cls(val_start_ms=int(q_val), test_start_ms=int(q_test), by="event times")


def target_positions(log: EventLog, start_ms: int | None, end_ms: int | None) -> np.ndarray:
    """Indices of events that are prediction targets with event time in [start_ms, end_ms).

    A target needs at least one earlier event of the same user (the window it is predicted from).
    """
    first = np.zeros(len(log), dtype=bool)
    first[log.user_starts[:-1]] = True
    ok = ~first
    if start_ms is not None:
        ok &= log.times_ms >= start_ms
    if end_ms is not None:
        ok &= log.times_ms < end_ms
    return np.flatnonzero(ok)


def target_windows(log: EventLog, targets: np.ndarray, length: int, chunk: int = 2048) -> Iterator[list[Window]]:
    """The windows the target events are predicted from (each one's up to ``length`` earlier events of its user),
    ``chunk`` targets at a time: what training, evaluation and promotion hand to the predictor."""
    starts = np.maximum(user_start_of(log)[targets], targets - length)
    for lo in range(0, len(targets), chunk):
        yield [Window(log.category_ids[a:b], log.event_types[a:b], log.times_ms[a:b])
               for a, b in zip(starts[lo: lo + chunk], targets[lo: lo + chunk])]


def user_start_of(log: EventLog) -> np.ndarray:
    """For every event, the index of its user's first event."""
    lengths = np.diff(log.user_starts)
    return np.repeat(log.user_starts[:-1], lengths)


def purchase_labels(log: EventLog, horizon: int, session_gap_ms: int = SESSION_GAP_MS) -> np.ndarray:
    """For every event i: does the user purchase among events i .. i+horizon-1 of the same session?

    A prediction made after event i-1 asks exactly this about the events that follow it.
    """
    n = len(log)
    purchase = log.event_types == EVENT_TYPE_CODES["purchase"]
    new_session = np.ones(n, dtype=bool)
    if n > 1:
        new_session[1:] = (np.diff(log.times_ms) > session_gap_ms)
    new_session[log.user_starts[:-1]] = True
    session_id = np.cumsum(new_session)
    label = np.zeros(n, dtype=bool)
    for k in range(horizon):
        shifted = np.zeros(n, dtype=bool)
        same = np.zeros(n, dtype=bool)
        shifted[: n - k] = purchase[k:]
        same[: n - k] = session_id[k:] == session_id[: n - k]
        label |= shifted & same
    return label


def load_events(paths: Sequence[str | Path], fmt: str, mapping: str | None = None) -> tuple[EventLog,
                                                                                          list[ReadReport]]:
    """Read logs with the CLI's readers and clean them into one EventLog."""
    column_mapping = ColumnMapping.load(mapping) if mapping else None
    reports: list[ReadReport] = []

    def clicks() -> Iterator[Click]:
        for path in paths:
            report = ReadReport(str(path))
            reports.append(report)
            yield from read_log(path, fmt, mapping=column_mapping, report=report,  # type: ignore[arg-type]
                                id_prefix=f"{Path(path).name}")

    log = clean_events(clicks())
    if len(log) == 0:
        why = "; ".join(r.summary() for r in reports)
        dropped = {k: v for k, v in log.cleaning.items() if k not in ("read", "kept") and v}
        raise InputError(f"the logs hold no usable events ({why}"
                         + (f"; cleaning dropped {dropped}" if dropped else "") + ")")
    return log, reports


def skipped_summary(log: EventLog, reports: Sequence[ReadReport]) -> str:
    """One phrase: rows the readers skipped and events the cleaning dropped, by reason."""
    bad = sum(r.bad for r in reports)
    parts = [f"{bad} bad rows skipped"] if bad else []
    for key, label in (("duplicates", "duplicates"), ("unknown_type", "of unknown type"),
                       ("outlying_time", "with outlying times")):
        if log.cleaning.get(key):
            parts.append(f"{log.cleaning[key]} {label} dropped")
    return ", ".join(parts) if parts else "no rows skipped"
