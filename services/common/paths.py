"""Where peftlab keeps models, data and runs: under `var/` in the repo unless PEFTLAB_VAR says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def var_dir() -> Path:
    return Path(os.environ.get("PEFTLAB_VAR", REPO_ROOT / "var")).resolve()


def models_dir() -> Path:
    return var_dir() / "models"


def data_dir() -> Path:
    return var_dir() / "data"


def runs_dir() -> Path:
    return var_dir() / "runs"


DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_QUANTIZED_MODEL_NAME = "smollm2-135m-instruct-4bit"
TINY_MODEL_NAME = "tiny-llama"
DEFAULT_DATASET_NAME = "default"


def default_model() -> Path:
    return models_dir() / DEFAULT_MODEL_NAME


def default_data() -> Path:
    return data_dir() / DEFAULT_DATASET_NAME
