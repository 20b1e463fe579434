"""Tune a plain `mlx_lm lora` run with peftlab's optimizer (no peftlab trainer involved): each trial is one
`python -m mlx_lm lora` process; its last validation loss goes back to the optimizer (examples/ask_tell.py).

    python examples/tune_mlx_lm_lora.py --optimizer HOST:50053 --model MODEL_DIR --data DATA_DIR --trials 8
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ask_tell import AskTell  # noqa: E402

# mlx_lm prints "Val loss X" in older releases and a table row "<step> val X <time>" (with colours) in newer.
VAL_LOSS = re.compile(r"\b[Vv]al(?: loss)?\s+([0-9]+\.[0-9]+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def train(model: str, data: str, iters: int, learning_rate: float, num_layers: int, out: Path) -> float:
    """One mlx_lm LoRA run; its final validation loss (raises when the run fails)."""
    command = [
        sys.executable, "-m", "mlx_lm", "lora", "--model", model, "--train", "--data", data,
        "--iters", str(iters), "--learning-rate", f"{learning_rate:.6g}", "--num-layers", str(num_layers),
        "--batch-size", "2", "--val-batches", "2", "--steps-per-eval", str(iters), "--max-seq-length", "128",
        "--adapter-path", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    losses = VAL_LOSS.findall(ANSI.sub("", done.stdout))
    if done.returncode != 0 or not losses:
        raise RuntimeError(f"mlx_lm lora failed ({done.returncode}): {done.stderr[-400:]}")
    return float(losses[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optimizer", default="127.0.0.1:50053")
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="a dir with train.jsonl and valid.jsonl")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-layers", type=int, default=16, help="most layers to adapt (<= the model's)")
    parser.add_argument(
        "--token-file",
        default=os.environ.get("PEFTLAB_SERVICE_TOKEN_FILE", "var/secrets/service-token"),
        help="the optimizer's service token (`make run` makes var/secrets/service-token)",
    )
    args = parser.parse_args(argv)
    space = {"learning_rate": ("float", 1e-5, 1e-2, True), "num_layers": ("int", 1, args.max_layers, False)}
    token = os.environ.get("PEFTLAB_SERVICE_TOKEN", "")
    if not token and os.path.isfile(args.token_file):
        token = Path(args.token_file).read_text().strip()
    study = AskTell(args.optimizer, space, seed=args.seed, token=token)
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.trials):
            trial_id, params = study.ask()
            try:
                loss = train(args.model, args.data, args.iters, out=Path(tmp) / trial_id, **params)
                study.tell(trial_id, valid_loss=loss)
                print(f"trial {n}: {dict(sorted(params.items()))} -> valid loss {loss:.4f}", flush=True)
            except RuntimeError as exc:
                study.tell(trial_id, failed=True)
                print(f"trial {n}: {params} -> failed: {exc}", flush=True)
    best = study.best()
    print(f"best: {best[0]} valid loss {best[1]:.4f}" if best else "no trial finished")
    return 0 if best else 1


if __name__ == "__main__":
    sys.exit(main())
