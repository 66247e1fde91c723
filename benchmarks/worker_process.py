"""Run `faust -A streams.app worker` as a child process and wait until it serves (benchmarks and the
integration tests)."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.settings import ENV_PREFIX, Settings

FAUST = str(Path(sys.executable).parent / "faust")
READY_LINE = "shapes warmed"  # logged by the agent once the predictor is loaded and warm
REPO = Path(__file__).resolve().parent.parent


def worker_env(settings: Settings, model_dir: Path, state_dir: Path, **extra: str) -> dict[str, str]:
    """The environment that points a worker at these settings, this model and this state folder."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    with_paths = dataclasses.replace(settings, model_dir=str(model_dir), state_dir=str(state_dir))
    return {**inherited, **with_paths.to_env(), **extra}


class WorkerProcess:
    """One worker process; its output goes to ``<state_dir>/../<name>.log``."""

    def __init__(self, env: dict[str, str], log_path: Path, app: str = "streams.app",
                 web_port: int | None = None) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path, self.env, self.app, self.web_port = log_path, env, app, web_port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 180.0, ready_line: str = READY_LINE) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            web = ["--web-port", str(self.web_port)] if self.web_port else ["--without-web"]
            self.process = subprocess.Popen([FAUST, "-A", self.app, "worker", "-l", "info", *web],
                                            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while ready_line not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"worker did not start:\n{self.log()[-4000:]}")
            time.sleep(0.3)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
