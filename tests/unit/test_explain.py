"""Explanations: occlusion on a hand-made rule, the pointer's drivers of a tiny trained model, the explain command."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from core.events import EVENT_TYPE_CODES
from core.records import Driver
from model.explain import GROUPS, explain_window, mask_event, occlude_group
from model.window import Window
from tests.unit.test_model import TINY, own_cycles_log

T0_MS = 1_700_000_000_000
CART, VIEW = EVENT_TYPE_CODES["cart"], EVENT_TYPE_CODES["view"]


def window(categories: list[str], types: list[int] | None = None) -> Window:
    types = types or [VIEW] * len(categories)
    return Window(categories, np.asarray(types, dtype=np.int8), T0_MS + 30_000 * np.arange(len(categories)))


@dataclass
class Scores:
    top_categories: list[list[tuple[str, float]]]
    window_lengths: np.ndarray
    copy_weights: list[np.ndarray] | None = None
    drivers: list[tuple[Driver, ...]] | None = None


class NewestCart:
    """A stand-in predictor with a known rule: 0.75 to the category of the newest cart event, 0.25 to the
    newest event's category."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, windows: Sequence[Window]) -> Scores:
        self.calls.append(len(windows))
        tops = []
        for w in windows:
            score: dict[str, float] = {}
            carts = [c for c, t in zip(w.categories, w.event_types) if t == CART]
            if carts:
                score[carts[-1]] = 0.75
            score[w.categories[-1]] = score.get(w.categories[-1], 0.0) + 0.25
            tops.append(sorted(score.items(), key=lambda kv: -kv[1]))
        return Scores(tops, np.array([len(w) for w in windows]))


def test_occlusion_finds_the_event_and_the_group_a_known_rule_decides_by() -> None:
    predictor = NewestCart()
    w = window(["a", "b", "c", "d"], [VIEW, CART, VIEW, VIEW])
    result = explain_window(predictor.predict, w)
    # b (the newest cart) scores 0.75. Masking b (a category never seen, a view): no cart, b scores 0 -> 0.75;
    # masking a, c or d leaves b's 0.75. Renaming every category or making every event a view loses b's 0.75;
    # moving every event to the newest time changes nothing the rule reads.
    assert (result.category, result.score) == ("b", 0.75)
    assert [e.occlusion for e in result.events] == [0.0, 0.75, 0.0, 0.0]
    assert result.groups == {"category": 0.75, "event_type": 0.75, "time": 0.0}
    assert [(e.position, e.category_id, e.event_type) for e in result.events] == [
        (0, "a", "view"), (1, "b", "cart"), (2, "c", "view"), (3, "d", "view")]
    assert all(e.copied is None for e in result.events) and result.drivers == ()
    assert predictor.calls == [1 + len(w) + len(GROUPS)]  # every variant in one call


def test_masks_keep_positions_times_and_the_repeats() -> None:
    w = window(["a", "b", "a"], [CART, VIEW, CART])
    masked = mask_event(w, 0)
    assert masked.categories[1:] == ["b", "a"] and masked.categories[0] not in ("a", "b")
    assert masked.event_types.tolist() == [VIEW, VIEW, CART] and (masked.times_ms == w.times_ms).all()
    renamed = occlude_group(w, "category")
    assert renamed.categories[0] == renamed.categories[2] != renamed.categories[1]
    assert not {"a", "b"} & set(renamed.categories)
    assert occlude_group(w, "time").times_ms.tolist() == [w.times_ms[-1]] * 3
    assert w.categories == ["a", "b", "a"] and w.event_types.tolist() == [CART, VIEW, CART]  # not modified


@pytest.fixture(scope="module")
def own_cycles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each user cycles through four categories of their own: the next one is always the user's category
    seen longest ago, and can only be copied from the window (a new user's categories are not in the
    vocabulary)."""
    from model.train import train

    root = tmp_path_factory.mktemp("own")
    train([own_cycles_log(root / "own.csv")], "taobao", root / "model", TINY, verbose=0)
    return root / "model"


@pytest.mark.slow
def test_the_pointer_and_occlusion_single_out_the_event_that_decides(own_cycles: Path) -> None:
    from model.predictor import Predictor

    predictor = Predictor(own_cycles, batch_sizes=(16,), lengths=(8,), top_k=20, drivers=3, jit_compile=False)
    # x, seen once and longest ago, is next; every other category comes back later in the window
    result = explain_window(predictor.predict, window(["x", "c0", "c1", "c2", "c3", "c0", "c1", "c2"]))
    assert result.category == "x" and result.score > 0.5, result.top_categories[:3]
    (driver,) = result.drivers  # x is once in the window
    assert (driver.position, driver.category_id, driver.event_type) == (0, "x", "view") and driver.weight > 0.5
    occlusion = [e.occlusion for e in result.events]
    assert int(np.argmax(occlusion)) == 0 and occlusion[0] > 0.5 and max(map(abs, occlusion[1:])) < 0.1, occlusion
    copied = [e.copied for e in result.events]
    assert copied[0] == pytest.approx(driver.weight) and max(copied[1:]) < 0.1  # type: ignore[type-var]
    # x is out of the vocabulary: renamed, it cannot be copied; the events are all views already
    assert result.groups["category"] > 0.5 and result.groups["event_type"] == 0.0


@pytest.mark.slow
def test_the_predictor_returns_the_pointer_only_when_asked_and_it_is_the_networks(own_cycles: Path) -> None:
    import keras

    from model.features import encode_windows, window_index
    from model.predictor import Predictor

    seqs = [["c0", "c1", "c2", "c3", "c0"], ["u0_1", "u0_2", "u0_3", "u0_0", "u0_1", "u0_2", "u0_3", "u0_0"],
            ["q"], ["a", "b", "a"]]
    windows = [window(s) for s in seqs]
    plain = Predictor(own_cycles, batch_sizes=(8,), lengths=(8,), top_k=5, jit_compile=False).predict(windows)
    assert plain.copy_weights is None and plain.drivers is None
    predictor = Predictor(own_cycles, batch_sizes=(8,), lengths=(8,), top_k=5, drivers=2, jit_compile=False)
    asked = predictor.predict(windows)
    assert asked.top_categories == plain.top_categories  # the same predictions, with the pointer beside them

    model = keras.saving.load_model(own_cycles / "model.keras")
    flat = np.concatenate([np.asarray(s, dtype=object) for s in seqs])
    lengths = np.array([len(s) for s in seqs])
    index = window_index(np.cumsum(lengths), np.cumsum(lengths) - lengths, 8)
    x = encode_windows(predictor.spec.category_index(flat), np.unique(flat, return_inverse=True)[1],
                       np.full(len(flat), VIEW, dtype=np.int8), np.concatenate([w.times_ms for w in windows]),
                       index, predictor.spec)
    out = model([x["category"], x["event_type"], x["steps"]])
    copy = (1 - np.asarray(out["gate"])) * np.asarray(out["attention"])  # (B, 8), windows left-padded
    assert asked.copy_weights is not None and asked.drivers is not None
    for row, n in enumerate(lengths):
        np.testing.assert_allclose(asked.copy_weights[row], copy[row, 8 - n:], rtol=1e-4, atol=1e-6)
        top = asked.top_categories[row][0][0]
        steps = [i for i, c in enumerate(seqs[row]) if c == top]
        expected = sorted(steps, key=lambda i: -copy[row, 8 - n + i])[:2]
        assert [d.position for d in asked.drivers[row]] == expected
        assert all(d.category_id == top and d.weight == pytest.approx(copy[row, 8 - n + d.position], rel=1e-4)
                   for d in asked.drivers[row])
    # the own-cycle window's next category u0_1 is twice in it: both occurrences drive it, strongest first
    assert len(asked.drivers[1]) == 2 and asked.drivers[1][0].weight >= asked.drivers[1][1].weight


def user_log(path: Path) -> Path:
    t0 = T0_MS // 1000
    alice = ["x", "c0", "c1", "c2", "c3", "c0", "c1", "c2"]
    rows = [f"alice,{k},{c},{'cart' if k == 3 else 'pv'},{t0 + 30 * k}" for k, c in enumerate(alice)]
    rows += [f"bob,{k},b{k % 2},pv,{t0 + 40 * k}" for k in range(5)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_explain_command_prints_the_attributions_and_plots_them(own_cycles: Path, tmp_path: Path) -> None:
    log, plot = user_log(tmp_path / "log.csv"), tmp_path / "why.png"
    result = CliRunner().invoke(main, ["explain", "--model", str(own_cycles), str(log), "--user", "alice",
                                       "--plot", str(plot), "--top", "3"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("user alice: 8 events in the log; the window holds the newest 8")
    assert lines[1].startswith("predicted next categories: x ") and lines[1].count(",") == 2
    table = {line.split()[0]: line.split() for line in lines if line.strip()[:1].isdigit()}
    # pos, date, time, category, type, occlusion, pointer: x decides, the cart event of c2 is in the table
    assert table["0"][3:5] == ["x", "view"] and float(table["0"][5]) > 0.5 and "<- top category" in lines[4]
    assert table["3"][3:5] == ["c2", "cart"] and abs(float(table["3"][5])) < 0.1
    assert any(line.split()[:1] == ["category"] and float(line.split()[1]) > 0.5 for line in lines)
    assert "drivers (what a prediction carries with explain_predictions): position 0 (view)" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and lines[-1] == f"plot written to {plot}"


def test_explain_command_unknown_user_is_one_line(tmp_path: Path) -> None:
    log = user_log(tmp_path / "log.csv")
    # the log is read before any model is loaded: no artifact needed to learn that carol is not in it
    result = CliRunner().invoke(main, ["explain", "--model", str(tmp_path / "none"), str(log), "--user", "carol"])
    assert result.exit_code == 3
    assert result.output.strip().splitlines() == [f"error: user 'carol' has no events in {log}"]


def test_plot_without_matplotlib_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    log = user_log(tmp_path / "log.csv")
    result = CliRunner().invoke(main, ["explain", "--model", str(tmp_path / "none"), str(log), "--user", "alice",
                                       "--plot", str(tmp_path / "why.png")])
    assert result.exit_code == 2 and not (tmp_path / "why.png").exists()
    assert result.output.strip().splitlines() == ["error: plots need matplotlib: pip install 'clickstream-intent[plots]'"]
