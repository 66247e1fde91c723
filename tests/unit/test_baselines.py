"""Stored baselines, the final mix and the bootstrap intervals: tiny hand-made logs, no TensorFlow."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.baselines import StoredBaselines
from model.data import _sorted_log
from model.evaluate import _progress, bootstrap
from model.mix import MixTuner, rank


def tiny_log(rows: list[tuple[str, str, int]]):  # (user, category, time in s)
    users, cats, times = zip(*rows)
    return _sorted_log(np.asarray(users, dtype=object), np.asarray(cats, dtype=object),
                       np.ones(len(rows), dtype=np.int8), np.asarray(times, dtype=np.int64) * 1000)


def test_fit_counts_transitions_and_neighbours_only_where_the_mask_allows() -> None:
    # u1: a b a b c, u2: a b | d a (the last two are outside the fit mask)
    log = tiny_log([("u1", "a", 0), ("u1", "b", 1), ("u1", "a", 2), ("u1", "b", 3), ("u1", "c", 4),
                    ("u2", "a", 0), ("u2", "b", 1), ("u2", "d", 10), ("u2", "a", 11)])
    fit = log.times_ms < 10_000
    b = StoredBaselines.fit(log, fit, k=5)
    # after a: b three times (u1 twice, u2 once); after b: a once, c once (ties: the smaller code first)
    assert b.markov["a"] == [("b", 1.0)]
    assert b.markov["b"] == [("a", 0.5), ("c", 0.5)]
    assert "d" not in b.markov and all(c != "d" for c, _ in b.popular)  # d is never fit
    assert b.popular[0] == ("a", round(3 / 7, 5))
    assert {c for c, _ in b.neighbours["c"]} == {"a", "b"}
    assert b.markov_chain(["x", "a"], k=3) == ["b", "a", "c"]  # filled up with the popular ones
    assert b.last_then_markov(["b"], k=3) == ["b", "a", "c"]
    assert b.recency_frequency(["a", "b", "a"], k=2, decay=0.5) == ["a", "b"]  # a: 1 + 0.25, b: 0.5
    again = StoredBaselines.from_json(json.loads(json.dumps(b.to_json())))
    assert again.markov == b.markov and again.neighbours == b.neighbours and again.popular == b.popular


def session_log():
    # training sessions, oldest first: u1 a b c; u2 a d; u3 b c e; u4 a c; u5 a (one category: dropped)
    return tiny_log([("u1", "a", 0), ("u1", "b", 1), ("u1", "c", 2), ("u2", "a", 10), ("u2", "d", 11),
                     ("u3", "b", 20), ("u3", "c", 21), ("u3", "e", 22), ("u4", "a", 30), ("u4", "c", 31),
                     ("u5", "a", 40)])


def test_session_knn_votes_by_hand() -> None:
    log = session_log()
    b = StoredBaselines.fit(log, np.ones(len(log), dtype=bool))
    assert len(b.sessions.ends) == 4
    # window b a: a weighs 10/10, b 9/10; the sessions holding a: u1 (a + b = 1.9), u2 (1.0), u4 (1.0);
    # votes: a 1.9 + 1 + 1, c 1.9 + 1 (u1, u4), b 1.9, d 1.0; u3 (no a) is not a candidate, so e gets nothing
    assert b.sessions.scores(["b", "a"]) == {"a": 3.9, "c": 2.9, "b": 1.9, "d": 1.0}
    assert b.session_knn(["b", "a"], k=5) == ["a", "c", "b", "d", "e"]  # e: filled from the popular ones
    assert b.sessions.scores(["a", "zz"]) == {}  # an unknown newest category finds no session
    # an event SCOPE steps back no longer weighs: only a (1.0) counts, each of u1, u2, u4 votes 1
    assert b.sessions.scores(["b"] + ["a"] * 10) == {"a": 3.0, "c": 2.0, "b": 1.0, "d": 1.0}
    again = StoredBaselines.from_json(json.loads(json.dumps(b.to_json())))
    assert again.sessions.scores(["b", "a"]) == b.sessions.scores(["b", "a"])


def test_session_knn_samples_the_newest_sessions_and_keeps_the_most_similar(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import model.session_knn as sknn

    log = session_log()
    monkeypatch.setattr(sknn, "SAMPLE", 2)  # the two newest sessions holding a: u4, u2
    b = StoredBaselines.fit(log, np.ones(len(log), dtype=bool))
    assert b.sessions.scores(["b", "a"]) == {"a": 2.0, "c": 1.0, "d": 1.0}
    monkeypatch.setattr(sknn, "SAMPLE", 500)
    monkeypatch.setattr(sknn, "NEIGHBOURS", 1)  # only u1 (1.9) votes
    b = StoredBaselines.fit(log, np.ones(len(log), dtype=bool))
    assert b.sessions.scores(["b", "a"]) == {"a": 1.9, "b": 1.9, "c": 1.9}
    # the fit mask holds: without u1 and u4 only u2 holds a
    b = StoredBaselines.fit(log, ~np.isin(log.user_ids, ["u1", "u4"]))
    assert b.sessions.scores(["b", "a"]) == {"a": 1.0, "d": 1.0}


def test_refit_keeps_the_choices_and_counts_the_other_events() -> None:
    log = session_log()
    early = StoredBaselines.fit(log, log.times_ms < 25_000)
    early.decay, early.mix, early.event_type_weights = 0.5, {"network": 0.5, "sessions": 0.5}, [1.0, 2.0]
    later = early.refit(log, np.ones(len(log), dtype=bool), fitted_on="everything")
    assert (later.decay, later.mix, later.event_type_weights, later.fitted_on) == (
        0.5, {"network": 0.5, "sessions": 0.5}, [1.0, 2.0], "everything")
    assert early.markov["a"] == [("b", 0.5), ("d", 0.5)] and len(early.sessions.ends) == 3
    assert later.markov["a"] == [("b", 0.33333), ("c", 0.33333), ("d", 0.33333)] and len(later.sessions.ends) == 4


def baselines_with(markov: dict[str, list[tuple[str, float]]]) -> StoredBaselines:
    return StoredBaselines(popular=[("p", 1.0)], markov=markov, neighbours={}, decay=0.8)


def test_mix_ranks_like_each_signal_when_it_has_all_the_weight() -> None:
    b = baselines_with({"a": [("m1", 0.7), ("m2", 0.3)]})
    network = [("n1", 0.6), ("n2", 0.3), ("a", 0.1)]
    assert [c for c, _ in rank(b, ["z", "a"], network, 3, {"network": 1})] == ["n1", "n2", "a"]
    assert [c for c, _ in rank(b, ["z", "a"], network, 2, {"markov": 1})] == ["m1", "m2"]
    assert [c for c, _ in rank(b, ["z", "a"], network, 1, {"last": 1})] == ["a"]
    # an even mix: n1 0.3, m1 0.35
    assert [c for c, _ in rank(b, ["z", "a"], network, 2, {"network": 1, "markov": 1})] == ["m1", "n1"]
    log = session_log()
    b = StoredBaselines.fit(log, np.ones(len(log), dtype=bool))
    assert [c for c, _ in rank(b, ["b", "a"], network, 4, {"sessions": 1})] == ["a", "c", "b", "d"]


def test_tuner_moves_weight_to_the_signal_that_is_right_on_validation() -> None:
    b = baselines_with({"a": [("m1", 0.9), ("n1", 0.1)]})
    windows = [["a"]] * 10
    network = [[("n1", 0.5), ("m1", 0.4)]] * 10
    truth = ["m1"] * 7 + ["n1"] * 3  # the network's first choice is right 3 times, Markov's 7 times
    tuner = MixTuner(b, windows, network, truth)
    assert tuner.ranks({"network": 1}).tolist() == [2] * 7 + [1] * 3
    weights = tuner.tune()
    assert tuner.ranks(weights).tolist() == [1] * 7 + [2] * 3
    assert weights["markov"] > 0 and abs(sum(weights.values()) - 1) < 1e-3


def test_bootstrap_intervals_hold_the_estimate_and_a_method_equal_to_the_best_has_no_lift() -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 50, 1000)
    base = rng.integers(0, 11, 1000)
    rank_of = {"model": base.copy(), "network_alone": base.copy(), "markov": base}
    ci = bootstrap(rank_of, np.unique(users, return_inverse=True)[1], "markov", resamples=50)
    hr5 = float(np.mean((base > 0) & (base <= 5)))
    lo, hi = ci["methods"]["markov"]["hr@5"]
    assert lo < hr5 < hi and hi - lo < 0.2
    assert ci["lift"]["mrr@10"] == [0.0, 0.0]


def test_evaluate_progress_is_a_line_per_chunk_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    report = _progress(5000, 2048, True)  # pytest's captured stderr is not a terminal
    for done in (2048, 4096, 5000):
        report(done)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" events")[0] for line in lines] == [
        "evaluate: 2048/5000", "evaluate: 4096/5000", "evaluate: 5000/5000"]


@pytest.mark.slow
def test_tensorflow_imports_without_start_up_noise(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    code = "from model.tf_quiet import import_tensorflow; tf = import_tensorflow(); print(tf.constant(2) + 1)"
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CLICKSTREAM_TF_LOG")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0 and "tf.Tensor(3" in done.stdout
    assert done.stderr == "", done.stderr


def test_class_factors_let_a_rare_class_be_predicted_when_that_raises_macro_f1() -> None:
    from model.metrics import tune_class_weights

    # class 2 is always less likely than class 1 by the probabilities, but it is the truth where p2 >= 0.3
    probs = np.array([[0, 0.8, 0.2]] * 6 + [[0, 0.6, 0.4]] * 4)
    truth = np.array([1] * 6 + [2] * 4)
    w = tune_class_weights(probs, truth, ["unknown", "view", "cart"])
    assert (probs * w).argmax(axis=1).tolist() == truth.tolist()
    assert w[0] == 1.0  # a class that never occurs keeps its factor


def test_a_time_range_with_a_gap_is_split_by_event_times() -> None:
    from model.data import TimeSplit

    # 100 events in the first 100 s, 5 events 10^6 s later: by time range the validation slice is empty
    log = tiny_log([("u", f"c{i}", i) for i in range(100)] + [("u", "c", 1_000_000 + i) for i in range(5)])
    split = TimeSplit.by_fraction(log, test=0.2, val=0.1)
    assert split.by == "event times"
    assert int(np.sum(log.times_ms >= split.test_start_ms)) == 21  # the last fifth of the 105 events
    even = tiny_log([("u", f"c{i}", i) for i in range(100)])
    assert TimeSplit.by_fraction(even).by == "time range"


def test_train_warns_in_one_line_when_the_model_does_not_beat_the_best_baseline() -> None:
    from cli.model_commands import beats_baselines_warning

    rows = {"model": {"hr@1": 0.3, "hr@5": 0.5, "mrr@10": 0.4}, "markov": {"hr@1": 0.3, "hr@5": 0.55, "mrr@10": 0.4}}
    warning = beats_baselines_warning({"next_category": rows, "best_baseline": "markov"})
    assert warning is not None and "\n" not in warning and "does not beat markov" in warning
    rows["model"] = {"hr@1": 0.3, "hr@5": 0.6, "mrr@10": 0.45}
    assert beats_baselines_warning({"next_category": rows, "best_baseline": "markov"}) is None
