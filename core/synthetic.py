"""A synthetic shopper generator for demos and benchmarks when no real log is at hand.

Shoppers have a few favourite categories, browse in runs within one category, and sometimes put an item
in the cart and buy it: enough structure for a model to learn, deterministic for a given seed.
"""
from __future__ import annotations

import random
import time
from collections.abc import Iterator

from core.records import Click


def synthetic_clicks(users: int, events: int, *, seed: int = 0, categories: int = 300,
                     start_ms: int | None = None, id_prefix: str | None = None) -> Iterator[Click]:
    """Yield ``events`` clicks of ``users`` shoppers in event-time order."""
    if users < 1 or events < 0 or categories < 2:
        raise ValueError("users >= 1, events >= 0 and categories >= 2 are required")
    rng = random.Random(seed)
    prefix = id_prefix or f"syn{seed}"
    # Zipf-like popularity: a few categories are visited by everyone.
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(categories)]
    population = list(range(categories))
    favourites = [rng.choices(population, weights, k=rng.randint(2, 5)) for _ in range(users)]
    current = [fav[0] for fav in favourites]
    last_type = ["view"] * users
    # ~51 ms of event time per click on average: by default the last click lands near now
    now_ms = start_ms if start_ms is not None else int(time.time() * 1000) - events * 51
    for i in range(events):
        u = rng.randrange(users)
        now_ms += int(rng.expovariate(1 / 50)) + 1
        r = rng.random()
        if r < 0.6:
            category = current[u]
        elif r < 0.9:
            category = rng.choice(favourites[u])
        else:
            category = rng.choices(population, weights)[0]
        if last_type[u] == "cart" and category == current[u] and rng.random() < 0.35:
            event_type = "purchase"
        elif category == current[u] and rng.random() < 0.08:
            event_type = "cart"
        elif rng.random() < 0.03:
            event_type = "fav"
        else:
            event_type = "view"
        current[u], last_type[u] = category, event_type
        yield Click(event_id=f"{prefix}-{i}", user_id=f"u{u}", item_id=str(category * 1000 + rng.randrange(50)),
                    category_id=str(category), event_type=event_type, event_time_ms=now_ms)


def write_taobao_csv(path: str, users: int, events: int, seed: int = 0) -> None:
    """Write synthetic clicks as a Taobao UserBehavior CSV (a log to train and replay without real data)."""
    behaviour = {"view": "pv", "fav": "fav", "cart": "cart", "purchase": "buy"}
    start_ms = 1_700_000_000_000
    with open(path, "w") as f:
        for c in synthetic_clicks(users, events, seed=seed, start_ms=start_ms):
            f.write(f"{c.user_id[1:]},{c.item_id},{c.category_id},{behaviour[c.event_type]},"
                    f"{c.event_time_ms // 1000}\n")


if __name__ == "__main__":  # pragma: no cover - used by deploy/demo.sh
    import argparse

    parser = argparse.ArgumentParser(description="Write synthetic shoppers' clicks as a Taobao-format CSV.")
    parser.add_argument("out")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_taobao_csv(args.out, args.users, args.events, args.seed)
