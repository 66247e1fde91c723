"""The purchase stage: its window signals against a plain per-window reading, the fit, storage and serving."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from core.events import EVENT_TYPE_CODES
from model.baselines import StoredBaselines
from model.data import SESSION_GAP_MS
from model.metrics import brier, calibration_error, reliability
from model.purchase import FEATURES, PurchaseStage, fit_logistic, log_loss, purchase_features

VIEW, FAV, CART, BUY = (EVENT_TYPE_CODES[n] + 1 for n in ("view", "fav", "cart", "purchase"))  # window inputs


def seconds(ms: float) -> float:
    return math.log1p(max(ms, 0) / 1000) / 10


def reference(codes: list[int], types: list[int], times: list[int]) -> list[float]:
    """The signals of one window (no padding), read off the events one question at a time."""
    n = len(codes)
    start = max([i for i in range(1, n) if times[i] - times[i - 1] > SESSION_GAP_MS], default=0)
    session = range(start, n)
    carts = [i for i in range(n) if types[i] == CART]
    session_carts = [i for i in session if types[i] == CART]
    open_carts = {codes[i] for i in carts
                  if not any(codes[j] == codes[i] and types[j] in (CART, BUY) for j in range(i + 1, n))}
    newest = codes[-1]
    duration = times[-1] - times[start]
    return [
        math.log1p(n - start), math.log1p(n),
        math.log1p(len(session_carts)), math.log1p(sum(types[i] == BUY for i in session)),
        math.log1p(sum(types[i] == FAV for i in session)), math.log1p(len(carts)),
        math.log1p(sum(t == BUY for t in types)),
        math.log1p(len(open_carts)), float(newest in open_carts),
        seconds(times[-1] - times[session_carts[0]]) if session_carts else 0.0,
        seconds(times[-1] - times[carts[-1]]) if carts else 0.0,
        math.log1p(n - 1 - carts[-1]) if carts else 0.0,
        seconds(times[-1] - times[-2]) if n > 1 else 0.0,
        seconds(duration / max(n - start - 1, 1)), seconds(duration), seconds(times[-1] - times[0]),
        math.log1p(codes.count(newest)), math.log1p(sum(codes[i] == newest for i in session)),
        math.log1p(len({codes[i] for i in session})),
        float(types[-1] == CART), float(types[-1] == BUY), float(types[-1] == FAV),
    ]


def padded(windows: list[tuple[list[int], list[int], list[int]]], length: int) -> tuple[np.ndarray, ...]:
    """Left-padded (B, length) columns as ``features.window_columns`` gives them (code -1, type 0, time 0)."""
    code = np.full((len(windows), length), -1, dtype=np.int64)
    types = np.zeros((len(windows), length), dtype=np.int32)
    times = np.zeros((len(windows), length), dtype=np.int64)
    for r, (c, t, ms) in enumerate(windows):
        code[r, length - len(c):], types[r, length - len(t):], times[r, length - len(ms):] = c, t, ms
    return code, types, times


def random_windows(rng: np.random.Generator, count: int, longest: int) -> list[tuple[list[int], ...]]:
    out = []
    for _ in range(count):
        n = int(rng.integers(1, longest + 1))
        gaps = rng.choice([5_000, 60_000, 600_000, 2 * SESSION_GAP_MS], size=n, p=[0.5, 0.3, 0.15, 0.05])
        out.append((rng.integers(0, 6, n).tolist(), rng.choice([VIEW, FAV, CART, BUY], n, p=[0.6, 0.1, 0.2, 0.1]).tolist(),
                    (1_600_000_000_000 + np.cumsum(gaps)).tolist()))
    return out


def test_the_signals_are_what_a_plain_reading_of_each_window_gives_whatever_the_padding() -> None:
    rng = np.random.default_rng(7)
    windows = random_windows(rng, 300, 20)
    expected = np.array([reference(*w) for w in windows])
    assert expected.shape[1] == len(FEATURES) - 1
    for length in (20, 32):  # the predictor pads to its length bucket; training pads to the window length
        np.testing.assert_allclose(purchase_features(*padded(windows, length)), expected, rtol=1e-6, atol=1e-9)


def test_a_cart_counts_as_open_until_the_same_category_is_bought() -> None:
    t0 = 1_600_000_000_000
    carted = ([1, 2, 1], [CART, VIEW, VIEW], [t0, t0 + 10_000, t0 + 20_000])
    bought = ([1, 2, 1], [CART, VIEW, BUY], [t0, t0 + 10_000, t0 + 20_000])
    other = ([1, 2, 2], [CART, VIEW, BUY], [t0, t0 + 10_000, t0 + 20_000])  # another category bought
    signals = purchase_features(*padded([carted, bought, other], 4))
    open_carts, newest_open = FEATURES.index("open_carts") - 1, FEATURES.index("newest_open_cart") - 1
    assert signals[:, open_carts].tolist() == pytest.approx([math.log(2), 0.0, math.log(2)])
    assert signals[:, newest_open].tolist() == [1.0, 0.0, 0.0]


def test_the_logistic_fit_reaches_the_penalised_optimum() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 3)) * [1.0, 5.0, 0.01]  # badly scaled columns: Newton steps need halving
    y = (rng.random(2000) < 1 / (1 + np.exp(-(1.5 * x[:, 0] - 3)))).astype(np.float64)
    for strength in (0.01, 1.0, 1e6):
        coef, intercept = fit_logistic(x, y, strength)
        p = 1 / (1 + np.exp(-(x @ coef + intercept)))
        gradient = np.r_[x.T @ (p - y) + coef / strength, np.sum(p - y)]
        assert np.abs(gradient).max() < 1e-4 * len(y)  # zero gradient of the penalised objective
    coef, _ = fit_logistic(x, y, 1e6)
    assert coef[0] == pytest.approx(1.5, abs=0.25)


def test_the_stage_uses_the_signals_only_when_they_predict_better_than_the_head_alone() -> None:
    rng = np.random.default_rng(2)
    windows = random_windows(rng, 4000, 12)
    signals = purchase_features(*padded(windows, 12))
    open_carts = signals[:, FEATURES.index("open_carts") - 1]
    head = np.full(len(windows), 0.1)  # a head that knows nothing
    bought = rng.random(len(windows)) < np.where(open_carts > 0, 0.3, 0.03)  # open carts are what matters
    stage = PurchaseStage.fit(head, signals, bought)
    assert stage.features == FEATURES and stage.validation["purchases"] == int(bought.sum())
    served = stage(head, *padded(windows, 12))
    assert log_loss(bought, served) < log_loss(bought, head) - 0.05
    assert served[open_carts > 0].mean() == pytest.approx(0.3, abs=0.03)
    # a head that already says it all: Platt scaling of its logit wins
    truth = np.where(open_carts > 0, 0.3, 0.03)
    informed = 1 / (1 + np.exp(-(2 * np.log(truth / (1 - truth)))))  # right ranking, overconfident
    platt = PurchaseStage.fit(informed, rng.normal(size=signals.shape), bought)  # signals that are noise
    assert platt.features == FEATURES[:1]
    assert calibration_error(reliability(bought, platt(informed, *padded(windows, 12)))) < 0.02


def test_the_stage_is_stored_with_the_baselines_and_the_predictor_serves_it(tmp_path) -> None:
    rng = np.random.default_rng(3)
    windows = random_windows(rng, 500, 8)
    signals = purchase_features(*padded(windows, 8))
    stage = PurchaseStage.fit(rng.random(500), signals, rng.random(500) < 0.2)
    baselines = StoredBaselines(popular=[("p", 1.0)], markov={}, neighbours={}, purchase=stage)
    again = StoredBaselines.from_json(json.loads(json.dumps(baselines.to_json())))
    assert again.purchase is not None and again.purchase.features == stage.features
    head = rng.random(500).astype(np.float32)
    np.testing.assert_allclose(again.purchase(head, *padded(windows, 8)), stage(head, *padded(windows, 8)), atol=1e-5)
    older = baselines.to_json() | {"format": 2}
    del older["purchase"]
    assert StoredBaselines.from_json(older).purchase is None  # an artifact from before the stage: the head serves
    wrong = stage.to_json() | {"features": ["head_logit", "something_else"]}
    with pytest.raises(ValueError, match="not the ones this code computes"):
        PurchaseStage.from_json(wrong)


def test_brier_and_the_reliability_curve() -> None:
    labels = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.3, 0.6, 0.9])
    assert brier(labels, p) == pytest.approx((0.01 + 0.09 + 0.16 + 0.01) / 4)
    curve = reliability(labels, p, bins=2)
    assert curve == [pytest.approx([0.2, 0.0, 0.5]), pytest.approx([0.75, 1.0, 0.5])]
    assert calibration_error(curve) == pytest.approx(0.5 * 0.2 + 0.5 * 0.25)
