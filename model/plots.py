"""matplotlib for the model's charts, when the ``plots`` extra is installed (the worker's image has none)."""
from __future__ import annotations

import sys
from typing import Any


def pyplot(chart: str) -> Any | None:
    """``matplotlib.pyplot`` drawing to files, or None and one line on stderr naming ``chart`` when matplotlib is
    missing: the reports and artifacts are complete without their charts."""
    try:
        import matplotlib
    except ImportError:
        print(f"no {chart}: charts need the plots extra (pip install 'clickstream-intent[plots]')", file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
