"""Windows/s of the batched predictor against batch size and window length, for each serving runtime (numpy,
the default, and tensorflow), next to `model.predict` called per window in the same run; with --drivers,
instead, the cost of explained predictions
(CLICKSTREAM_EXPLAIN_PREDICTIONS): windows/s with and without drivers, and the worker's per-click work of
building and encoding a prediction with and without them."""
from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, bar_chart, model_dir, table, write_results


def rate(fn, n_windows: int, min_s: float) -> float:
    fn()  # warm
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_s:
        fn()
        calls += 1
    return calls * n_windows / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks predictor", description=__doc__)
    parser.add_argument("--model", help="artifact folder (default: artifacts/model)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--per-window-calls", type=int, default=20, help="model.predict calls to time")
    parser.add_argument("--no-jit", action="store_true", help="compile without XLA")
    parser.add_argument("--drivers", action="store_true",
                        help="measure only what the drivers of explained predictions cost (see above)")
    parser.add_argument("--parts", action="store_true",
                        help="measure only what the purchase stage and the mix with the stored signals cost: the "
                             "numpy predictor on the same artifact with each part on and off, interleaved")
    args = parser.parse_args(argv)
    if args.drivers:
        drivers_cost(model_dir(args.model), args.seconds, not args.no_jit)
        return
    if args.parts:
        parts_cost(model_dir(args.model), args.seconds)
        return

    import keras

    from model.features import encode_windows, window_index
    from model.predictor import RUNTIMES, Predictor
    from model.window import Window

    path = model_dir(args.model)
    batches = (1, 32, 64, 256, 512)
    predictors = {runtime: Predictor(path, batch_sizes=batches, lengths=(8,), jit_compile=not args.no_jit,
                                     runtime=runtime) for runtime in RUNTIMES}
    gc.freeze()  # as the worker does once its model is loaded: no full collection walks TensorFlow's objects
    predictor = predictors["numpy"]
    n = predictor.window_length
    rng = np.random.default_rng(0)
    cats = list(predictor.spec.categories[:200])

    def windows(count: int, length: int) -> list[Window]:
        return [Window([cats[i] for i in rng.integers(0, len(cats), length)],
                       rng.integers(1, 6, length).astype(np.int8),
                       np.sort(rng.integers(1_511_000_000_000, 1_511_100_000_000, length))) for _ in range(count)]

    rows, results = [], []
    for length in (8, n):
        for batch in batches:
            ws = windows(batch, length)
            rates = {runtime: rate(lambda ws=ws, p=p: p.predict(ws), batch, args.seconds)
                     for runtime, p in predictors.items()}
            rows.append([batch, length, *rates.values(), rates["numpy"] / rates["tensorflow"]])
            results.append({"batch": batch, "length": length, "windows_per_s": rates["numpy"],
                            "windows_per_s_by_runtime": rates})
    # the seed's way: model.predict on one window at a time
    network = keras.saving.load_model(path / "model.keras")
    ws = windows(1, n)
    flat = np.asarray(ws[0].categories, dtype=object)
    x = encode_windows(predictor.spec.category_index(flat), np.unique(flat, return_inverse=True)[1],
                       ws[0].event_types, ws[0].times_ms, window_index(np.array([n]), np.array([0]), n),
                       predictor.spec)
    inputs = [x["category"], x["event_type"], x["steps"]]
    network.predict(inputs, verbose=0)
    start = time.perf_counter()
    for _ in range(args.per_window_calls):
        network.predict(inputs, verbose=0)
    per_window = args.per_window_calls / (time.perf_counter() - start)
    print(table(rows, ["batch", "length", "numpy windows/s", "tensorflow windows/s", "numpy / tensorflow"]))
    best = next(r for r in results if r["batch"] == 256 and r["length"] == n)["windows_per_s"]
    compiled = predictors["tensorflow"]
    print(f"batch 256, N={n}: {best:,.0f} windows/s (numpy runtime) = {best / per_window:,.0f}x model.predict per "
          f"window ({per_window:.1f}/s); the tensorflow runtime's warm-up of {compiled.shapes_total} shapes "
          f"took {compiled.warm_s:.1f}s")
    write_results("predictor", {"model": str(path), "model_version": predictor.version, "jit": not args.no_jit,
                                "results": results, "model_predict_per_window_per_s": per_window,
                                "speedup_batch256_vs_predict": best / per_window, "warm_s": compiled.warm_s})
    labels = [f"b{r[0]} N{r[1]}" for r in rows]
    bar_chart(RESULTS / "predictor.png", "predictor throughput, numpy runtime (windows/s)",
              [*labels, "predict/window"], [*(r[2] for r in rows), per_window], "windows/s", log=True)


def parts_cost(path: Path, seconds: float, rounds: int = 3) -> None:
    """Windows/s of the numpy predictor with the purchase stage and the mix on and off (artifact copies that differ
    in baselines.json only; the mix, where the artifact serves the network alone, with equal weights on every
    signal), interleaved rounds at batch 32 and 256 of full windows."""
    import dataclasses
    import shutil
    import tempfile

    from model.artifact import read_manifest, weights_digest, write_manifest
    from model.baselines import StoredBaselines
    from model.mix import COMPONENTS, NETWORK_ONLY
    from model.predictor import Predictor
    from model.window import Window

    stored = StoredBaselines.load(path)
    served_mix = any(w for name, w in stored.mix.items() if name != "network")
    mix = stored.mix if served_mix else {name: 1.0 / len(COMPONENTS) for name in COMPONENTS}
    variants = {"network alone, head alone": dataclasses.replace(stored, mix=dict(NETWORK_ONLY), purchase=None),
                "network alone, purchase stage": dataclasses.replace(stored, mix=dict(NETWORK_ONLY)),
                "mix, purchase stage": dataclasses.replace(stored, mix=mix)}
    n = read_manifest(path)["network"]["window_length"]
    predictors = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, baselines) in enumerate(variants.items()):
            copy = Path(shutil.copytree(path, Path(tmp) / str(i)))
            manifest = read_manifest(copy)
            manifest["baselines_sha256"] = weights_digest(baselines.save(copy))
            write_manifest(copy, manifest)
            predictors[name] = Predictor(copy, batch_sizes=(256,), lengths=(n,))
    gc.freeze()
    rng = np.random.default_rng(0)
    cats = list(next(iter(predictors.values())).spec.categories[:200])
    ws = []  # Taobao-like windows: a user comes back to a few categories
    for _ in range(256):
        own = [cats[i] for i in rng.integers(0, len(cats), 6)]
        ws.append(Window([own[i] for i in rng.integers(0, 6, n)], rng.integers(1, 6, n).astype(np.int8),
                         np.sort(rng.integers(1_511_000_000_000, 1_511_100_000_000, n))))
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):  # interleaved: a neighbour's load hits every variant alike
        for batch in (32, 256):
            for name, predictor in predictors.items():
                results.setdefault((name, batch), []).append(
                    rate(lambda p=predictor, b=batch: p.predict(ws[:b]), batch, seconds / rounds))
    base = {batch: float(np.median(results[(next(iter(variants)), batch)])) for batch in (32, 256)}
    rows = [[name, batch, float(np.median(v)), f"{float(np.median(v)) / base[batch] - 1:+.1%}"]
            for (name, batch), v in results.items()]
    print(f"mix weights: {mix} ({'as served' if served_mix else 'forced: the artifact serves the network alone'})")
    print(table(rows, ["variant", "batch", f"windows/s (N={n}, median of {rounds})", "vs the first"]))
    write_results("predictor-parts", {"model": str(path), "mix": mix, "mix_served": served_mix, "window_length": n,
                                      "results": [dict(zip(("variant", "batch", "windows_per_s", "change"), r))
                                                  for r in rows]})


def drivers_cost(path: Path, seconds: float, jit: bool, rounds: int = 3) -> None:
    """Windows/s and per-click prediction building + Avro encoding, with and without drivers, interleaved."""
    from core.records import Click, Prediction
    from model.artifact import read_manifest
    from model.explain import DRIVERS_PER_PREDICTION
    from model.predictor import Predictor
    from model.window import Window
    from schemas.codec import RecordCodec
    from streams.batch import predictions_of

    n = read_manifest(path)["network"]["window_length"]
    shapes = {"batch_sizes": (32, 256), "lengths": (n,), "jit_compile": jit}  # full windows only: one length
    plain = Predictor(path, **shapes)
    explained = Predictor(path, **shapes, drivers=DRIVERS_PER_PREDICTION)
    gc.freeze()
    rng = np.random.default_rng(0)
    cats = list(plain.spec.categories[:200])
    # Taobao-like windows: a user comes back to a few categories, so the top one is often in the window
    ws = []
    for _ in range(256):
        own = [cats[i] for i in rng.integers(0, len(cats), 6)]
        ws.append(Window([own[i] for i in rng.integers(0, 6, n)], rng.integers(1, 6, n).astype(np.int8),
                         np.sort(rng.integers(1_511_000_000_000, 1_511_100_000_000, n))))
    results: dict[str, list[float]] = {}
    for _ in range(rounds):  # interleaved: a neighbour's load hits both alike
        for batch in (32, 256):
            for name, predictor in (("without", plain), ("with", explained)):
                results.setdefault(f"{name} b{batch}", []).append(
                    rate(lambda p=predictor, b=batch: p.predict(ws[:b]), batch, seconds / rounds))
    codec = RecordCodec(Prediction)
    clicks = [Click(event_id=f"e{i}", user_id=f"u{i}", item_id="i", category_id=w.categories[-1], event_type="view",
                    event_time_ms=int(w.times_ms[-1])) for i, w in enumerate(ws)]
    batches = {"without": plain.predict(ws), "with": explained.predict(ws)}
    per_click_us: dict[str, float] = {}
    for _ in range(rounds):
        for name, batch in batches.items():
            start, calls = time.perf_counter(), 0
            while time.perf_counter() - start < 0.3:
                for p in predictions_of(clicks, batch, "v", 0, [None] * len(clicks)):
                    codec.encode(p)
                calls += 1
            us = (time.perf_counter() - start) / (calls * len(clicks)) * 1e6
            per_click_us[name] = min(us, per_click_us.get(name, us))
    with_drivers = sum(1 for d in batches["with"].drivers if d) / len(ws)
    rows = []
    for batch in (32, 256):
        without, with_ = max(results[f"without b{batch}"]), max(results[f"with b{batch}"])
        rows.append([f"predictor, batch {batch}, N={n}", without, with_, 100 * (1 - with_ / without)])
    rows.append(["build + encode a prediction (us/click)", per_click_us["without"], per_click_us["with"],
                 100 * (per_click_us["with"] / per_click_us["without"] - 1)])
    print(table(rows, ["what", "without drivers", "with drivers", "cost %"]))
    print(f"{with_drivers:.0%} of these windows' top categories are in the window (the others have no drivers); "
          f"best of {rounds} interleaved rounds")
    write_results("predictor_drivers", {
        "model": str(path), "model_version": plain.version, "jit": jit, "drivers": DRIVERS_PER_PREDICTION,
        "windows_per_s": {k: max(v) for k, v in results.items()}, "build_encode_us_per_click": per_click_us,
        "share_with_drivers": with_drivers})
