"""Why the model predicts what it does: the window events and feature groups behind a window's top category.

Two views, both numpy (the predictor is passed in as a function, so nothing here loads TensorFlow):

- drivers: the pointer copies probability from window events to their categories, ``(1 - gate) x attention``
  per event (``model/network.py``). The events whose category is the top one, strongest first, are what drove
  it through the pointer; the predictor computes them when asked (``Predictor(drivers=k)``, with
  :func:`batch_drivers`) and the worker puts them on each prediction with ``CLICKSTREAM_EXPLAIN_PREDICTIONS``.
  A top category that is not in the window came from the generator or the baselines alone: it has no drivers.
- occlusion (:func:`explain_window`): the served score of the top category (the network mixed with the
  stored baselines) on the window, minus its score when one event is masked (its category replaced by one
  the model never saw, its type by ``view``; its time and position kept, since removing it would move every
  older event one step further from the newest), and when one feature group is neutralised:

  - ``category``: every raw category id replaced by one never seen (equal ids stay equal, so the repetition
    features keep their values; the top category can no longer be copied from the window);
  - ``event_type``: every event a view;
  - ``time``: every event at the newest event's time (gaps and ages 0, one time of day).

  All variants of a window go to the predictor in one call. A positive attribution means the event (group)
  raised the top category's score. A masked event also leaves something behind: a category the user never
  visited, which a model that points at the category seen longest ago may pick. A large drop says that the
  window without that event predicts otherwise, not that the event alone made the answer; the drivers say
  where the pointer took the probability from.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from core.errors import ConfigError
from core.events import EVENT_TYPE_CODES, EVENT_TYPES
from core.records import Driver
from model.window import Window

DRIVERS_PER_PREDICTION = 3  # what the worker puts on each prediction when it explains them
Group = Literal["category", "event_type", "time"]
GROUPS: tuple[Group, ...] = ("category", "event_type", "time")
GROUP_MEANINGS: dict[str, str] = {"category": "every category id replaced by one never seen (repeats kept)",
                                  "event_type": "every event a view",
                                  "time": "every event at the newest event's time"}
NEUTRAL_EVENT_TYPE = EVENT_TYPE_CODES["view"]  # nine events in ten are views: the type that says least
MASK = "\x00masked:"  # prefix of category ids no vocabulary, log or baseline holds


def batch_drivers(top_categories: Sequence[str], top_codes: np.ndarray, step_codes: np.ndarray, copy: np.ndarray,
                  event_types: np.ndarray, times_ms: np.ndarray, first_position: np.ndarray,
                  count: int) -> list[tuple[Driver, ...]]:
    """Per window, the ``count`` steps of its top category by the probability the pointer copied from them,
    strongest first (of equal weights the older); () when the top category is not in the window.

    Windows are rows of (B, T) arrays as the network reads them: ``step_codes`` equal where raw category ids
    are equal (-1 at padding; ``top_codes`` are the top categories' codes in the same table), the event type
    codes and times of the steps, and ``first_position`` the window position of each row's step 0. Vectorised
    over the batch: only the chosen steps become Python objects.
    """
    weights = np.where(step_codes == top_codes[:, None], copy, -1.0)
    order = np.argsort(-weights, axis=1, kind="stable")[:, :count]
    chosen = np.take_along_axis(weights, order, axis=1)
    types = np.take_along_axis(event_types, order, axis=1).tolist()
    times = np.take_along_axis(times_ms, order, axis=1).tolist()
    firsts = first_position.tolist()
    return [tuple(Driver(position=first + step, category_id=category, event_type=EVENT_TYPES[t], event_time_ms=ms,
                         weight=w) for step, w, t, ms in zip(steps, row, row_types, row_times) if w >= 0)
            if row[0] >= 0 else ()
            for category, first, steps, row, row_types, row_times
            in zip(top_categories, firsts, order.tolist(), chosen.tolist(), types, times)]


def mask_event(window: Window, position: int) -> Window:
    """The window with one event masked: a category never seen, a view; its time kept."""
    categories = list(window.categories)
    categories[position] = f"{MASK}{position}"
    types = window.event_types.copy()
    types[position] = NEUTRAL_EVENT_TYPE
    return Window(categories, types, window.times_ms)


def occlude_group(window: Window, group: Group) -> Window:
    """The window with one feature group neutralised (see the module docstring)."""
    if group == "category":
        renamed = {c: f"{MASK}{i}" for i, c in enumerate(dict.fromkeys(window.categories))}
        return Window([renamed[c] for c in window.categories], window.event_types, window.times_ms)
    if group == "event_type":
        return Window(window.categories, np.full_like(window.event_types, NEUTRAL_EVENT_TYPE), window.times_ms)
    if group == "time":
        return Window(window.categories, window.event_types, np.full_like(window.times_ms, window.times_ms[-1]))
    raise ValueError(f"unknown feature group {group!r}")


class Predictions(Protocol):
    top_categories: list[list[tuple[str, float]]]
    window_lengths: np.ndarray
    copy_weights: list[np.ndarray] | None
    drivers: list[tuple[Driver, ...]] | None


@dataclasses.dataclass(frozen=True)
class EventAttribution:
    """One window event and what it did for the top category."""

    position: int
    category_id: str
    event_type: str
    event_time_ms: int
    occlusion: float  # top category's score on the window minus its score with this event masked
    copied: float | None  # probability the pointer copied from this event to its category (None: not asked)


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Attributions of one window's top category, per event (oldest first) and per feature group."""

    top_categories: list[tuple[str, float]]
    category: str
    score: float
    events: tuple[EventAttribution, ...]
    groups: dict[str, float]
    drivers: tuple[Driver, ...]


def explain_window(predict: Callable[[Sequence[Window]], Predictions], window: Window) -> Explanation:
    """Occlusion attributions of the window's top category, and its drivers when the predictor gives them.

    One predictor call for the window, each event masked and each group neutralised. The top category's score
    in a variant is 0 when it is no longer among the variant's ranked categories (a predictor with a larger
    ``top_k`` ranks more of them).
    """
    if not len(window):
        raise ValueError("an empty window has nothing to explain")
    variants = [window, *(mask_event(window, i) for i in range(len(window))),
                *(occlude_group(window, g) for g in GROUPS)]
    batch = predict(variants)
    top = list(batch.top_categories[0])
    category, score = top[0]

    def drop(row: int) -> float:
        return score - dict(batch.top_categories[row]).get(category, 0.0)

    length = int(batch.window_lengths[0])
    copied: list[float | None] = [None] * len(window)
    if batch.copy_weights is not None:
        # the predictor reads the newest `length` events; older ones copy nothing
        copied = [0.0] * (len(window) - length) + [float(w) for w in batch.copy_weights[0]]
    events = tuple(EventAttribution(position=i, category_id=window.categories[i],
                                    event_type=EVENT_TYPES[window.event_types[i]],
                                    event_time_ms=int(window.times_ms[i]), occlusion=drop(1 + i), copied=copied[i])
                   for i in range(len(window)))
    groups = {g: drop(1 + len(window) + j) for j, g in enumerate(GROUPS)}
    drivers = batch.drivers[0] if batch.drivers is not None else ()
    return Explanation(top, category, score, events, groups, drivers)


def require_plots() -> None:
    """Raise one clear error when matplotlib (the ``plots`` extra) is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("plots need matplotlib: pip install 'clickstream-intent[plots]'")


def plot_explanation(explanation: Explanation, path: str | Path, title: str) -> None:
    """A PNG of the attributions: per event (occlusion and pointer copy) and per feature group."""
    require_plots()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = explanation.events
    x = np.arange(len(events))
    fig, (ax, ax_groups) = plt.subplots(1, 2, figsize=(min(4 + 0.45 * len(events), 18), 4.6),
                                        gridspec_kw={"width_ratios": [max(3, len(events) // 4), 1.3]})
    highlight = ["C3" if e.category_id == explanation.category else "C0" for e in events]
    width = 0.4 if any(e.copied is not None for e in events) else 0.8
    ax.bar(x - (width / 2 if width < 0.8 else 0), [e.occlusion for e in events], width, color=highlight,
           label="occlusion: score drop when the event is masked")
    if width < 0.8:
        ax.bar(x + width / 2, [e.copied or 0.0 for e in events], width, color="C1", alpha=0.8,
               label="pointer: probability copied from the event (to its own category)")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, [f"{e.category_id}\n{e.event_type}" for e in events], rotation=90, fontsize=7)
    ax.set_xlabel("window events, oldest first (red: the top category)")
    ax.set_ylabel(f"attribution to {explanation.category}")
    ax.legend(fontsize=8)
    names = list(explanation.groups)
    ax_groups.bar([n.replace("_", "\n") for n in names], [explanation.groups[n] for n in names],
                  color=["C2", "C4", "C5"][: len(names)])
    ax_groups.axhline(0, color="black", linewidth=0.6)
    ax_groups.set_title("feature groups (occlusion)", fontsize=10)
    for a in (ax, ax_groups):
        a.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title}: top category {explanation.category} (score {explanation.score:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

