"""Runs of the PyTorch backend, executed by the comparator on its own machine: one child process per run
(`python -m services.comparator.backends.torch_peft --run-dir DIR`), at most `slots` at once.

The child writes everything to its run dir (spec.json in, metrics.jsonl, result.json or error.json out), so
the outcome survives the comparator: a restarted comparator on the same machine finds a running child by its
pid and a finished one by its files. Cancel is a `cancel` file the child polls between steps.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from services.common.records import now_ms
from services.common.spec import RunSpec
from services.common.validation import Roots, check_spec, new_id

from ..state import LocalRun

EXTRA = "pip install 'peftlab[torch]'"


def _finite(value: Any) -> Any:
    """NaN and infinity (e.g. no test split) as None: Redis records are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class LocalRunner:
    def __init__(self, experiments_root: Path, models_root: Path, data_root: Path, slots: int = 1):
        self.root = Path(experiments_root)
        self.roots = Roots.from_paths(models_root, data_root, experiments_root)
        self.slots = slots
        self.host = socket.gethostname()
        self._children: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._available: tuple[bool, str] | None = None

    def available(self) -> tuple[bool, str]:
        """(installed, what): torch and peft importable here, with their versions or what is missing."""
        if self._available is None:
            missing = [m for m in ("torch", "peft") if importlib.util.find_spec(m) is None]
            if missing:
                self._available = (False, f"{' and '.join(missing)} not installed; {EXTRA}")
            else:
                versions = ", ".join(f"{m} {importlib.metadata.version(m)}" for m in ("torch", "peft"))
                self._available = (True, versions)
        return self._available

    def free(self) -> bool:
        with self._lock:
            self._children = {k: p for k, p in self._children.items() if p.poll() is None}
            return len(self._children) < self.slots

    def start(self, experiment_id: str, spec: RunSpec, time_budget: float = 0.0) -> LocalRun:
        run_id = new_id("t")
        run_dir = self.root / experiment_id / "runs" / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = check_spec(spec, self.roots, must_exist=False)
        (run_dir / "spec.json").write_text(json.dumps(resolved.given(), indent=1, sort_keys=True))
        command = [sys.executable, "-m", "services.comparator.backends.torch_peft", "--run-dir", str(run_dir)]
        if time_budget:
            command += ["--time-budget", str(time_budget)]
        with open(run_dir / "log.txt", "ab") as log_file:
            child = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        with self._lock:
            self._children[run_id] = child
        now = now_ms()
        return LocalRun(
            id=run_id,
            spec=spec.given(),
            status="RUNNING",
            run_dir=str(run_dir),
            pid=child.pid,
            host=self.host,
            created_at=now,
            started_at=now,
        )

    def _alive(self, run: LocalRun) -> bool | None:
        """True/False when known; None when the process is on another machine (cannot tell from here)."""
        with self._lock:
            child = self._children.get(run.id)
        if child is not None:
            return child.poll() is None
        if run.host != self.host:
            return None
        try:
            cmdline = Path(f"/proc/{run.pid}/cmdline").read_bytes()
        except OSError:
            return False
        return run.id.encode() in cmdline

    def poll(self, run: LocalRun) -> LocalRun:
        """The run's state now, from its files and its process."""
        run_dir = Path(run.run_dir)
        result, error = run_dir / "result.json", run_dir / "error.json"
        if result.exists():
            metrics = _finite(json.loads(result.read_text()))
            return dataclasses.replace(run, status="SUCCEEDED", metrics=metrics, finished_at=now_ms())
        if error.exists():
            record = json.loads(error.read_text())
            status = "CANCELLED" if record.get("code") == "CANCELLED" else "FAILED"
            return dataclasses.replace(run, status=status, error=record, finished_at=now_ms())
        alive = self._alive(run)
        if alive or alive is None:
            return run
        if (run_dir / "cancel").exists():
            return dataclasses.replace(run, status="CANCELLED", finished_at=now_ms())
        code = ""
        with self._lock:
            child = self._children.get(run.id)
        if child is not None:
            code = f" (exit code {child.returncode})"
        return dataclasses.replace(
            run,
            status="FAILED",
            finished_at=now_ms(),
            error={
                "code": "INTERNAL",
                "field": "",
                "message": f"the PyTorch run process ended without a result{code}; see {run_dir / 'log.txt'}",
            },
        )

    def cancel(self, run: LocalRun) -> None:
        if run.run_dir:
            Path(run.run_dir, "cancel").touch()
