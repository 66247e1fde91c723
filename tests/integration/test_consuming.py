"""The README's "Consuming predictions" snippet, run as a user would against the local broker."""
from __future__ import annotations

import re
import subprocess
import sys

from core.kafka import ensure_topics, send_all
from core.records import Prediction
from core.settings import Settings
from schemas.codec import RecordCodec
from tests.conftest import REPO


def readme_block(marker: str) -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"no python block after <!-- {marker} --> in README.md"
    return match.group(1)


def test_the_readme_python_consumer_reads_predictions(settings: Settings) -> None:
    codec = RecordCodec(Prediction)
    predictions = [Prediction(event_id=f"e{i}", user_id=f"user-{i}", event_time_ms=1, predicted_at_ms=2,
                              model_version="v", top_categories=((f"cat-{i}", 0.5),), next_event_type={"view": 1.0},
                              purchase_probability=0.25, window_length=1) for i in range(3)]
    ensure_topics(settings, [settings.predictions_topic])
    assert send_all(settings, settings.predictions_topic, [(p.user_id.encode(), codec.encode(p), None)
                                                           for p in predictions]).failed == 0
    env = {"CLICKSTREAM_PREDICTIONS_TOPIC": settings.predictions_topic, "CLICKSTREAM_BROKER": settings.broker,
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", readme_block("consuming-python")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(done.stdout.splitlines()) == [f"user-{i} cat-{i} 0.25" for i in range(3)]
