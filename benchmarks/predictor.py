"""Windows/s of the batched predictor against batch size and window length, next to `model.predict`
called per window in the same run."""
from __future__ import annotations

import argparse
import time

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
    args = parser.parse_args(argv)

    import keras

    from model.features import encode_windows, window_index
    from model.predictor import Predictor
    from model.window import Window

    path = model_dir(args.model)
    predictor = Predictor(path, batch_sizes=(1, 32, 256), lengths=(8,), jit_compile=not args.no_jit)
    n = predictor.window_length
    rng = np.random.default_rng(0)
    cats = list(predictor.spec.categories[:200])

    def windows(count: int, length: int) -> list[Window]:
        return [Window([cats[i] for i in rng.integers(0, len(cats), length)],
                       rng.integers(1, 6, length).astype(np.int8),
                       np.sort(rng.integers(1_511_000_000_000, 1_511_100_000_000, length))) for _ in range(count)]

    rows, results = [], []
    for length in (8, n):
        for batch in (1, 32, 256):
            ws = windows(batch, length)
            r = rate(lambda ws=ws: predictor.predict(ws), batch, args.seconds)
            rows.append([batch, length, r])
            results.append({"batch": batch, "length": length, "windows_per_s": r})
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
    rows.append(["model.predict per window", n, per_window])
    print(table(rows, ["batch", "length", "windows/s"]))
    best = next(r for r in results if r["batch"] == 256 and r["length"] == n)["windows_per_s"]
    print(f"batch 256, N={n}: {best:,.0f} windows/s = {best / per_window:,.0f}x model.predict per window "
          f"({per_window:.1f}/s); warm-up of {len(predictor.batch_sizes) * len(predictor.lengths)} shapes "
          f"took {predictor.warm_s:.1f}s")
    write_results("predictor", {"model": str(path), "model_version": predictor.version, "jit": not args.no_jit,
                                "results": results, "model_predict_per_window_per_s": per_window,
                                "speedup_batch256_vs_predict": best / per_window, "warm_s": predictor.warm_s})
    bar_chart(RESULTS / "predictor.png", "predictor throughput (windows/s)",
              [f"b{r[0]} N{r[1]}" if isinstance(r[0], int) else "predict/window" for r in rows],
              [r[2] for r in rows], "windows/s", log=True)
