"""examples/tune_mlx_lm_lora.py: the optimizer's ask/tell cycle driving plain `mlx_lm lora` runs (3 trials,
tiny model) through a real optimizer server, with nothing of peftlab but the generated stubs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from service_helpers import start_optimizer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tune_mlx_lm_lora.py"


def test_example_tunes_three_mlx_lm_runs(tiny_model, chat_data):
    optimizer = start_optimizer()
    try:
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), "--optimizer", optimizer.address, "--model", str(tiny_model),
             "--data", str(chat_data), "--trials", "3", "--iters", "4", "--max-layers", "4"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        optimizer.stop()
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    trials = re.findall(
        r"trial (\d): \{'learning_rate': ([0-9.e-]+), 'num_layers': (\d+)\} -> valid loss ([0-9.]+)",
        done.stdout,
    )
    assert [t[0] for t in trials] == ["0", "1", "2"], done.stdout
    assert len({t[1] for t in trials}) == 3  # three different configurations were asked for
    best = min(float(t[3]) for t in trials)
    assert f"valid loss {best:.4f}" in done.stdout.splitlines()[-1]
