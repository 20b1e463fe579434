"""`peftlab` against a real gateway and trainer: submit a YAML spec and watch it to the end, list, get,
status, and the errors a person sees for a bad file or an unreachable gateway."""

from __future__ import annotations

import json

import pytest
from service_helpers import start_gateway, start_trainer

from services.cli.main import main


@pytest.fixture
def cluster(redis_url, redis_prefix, chat_data, tmp_path):
    trainer = start_trainer(redis_url, redis_prefix, chat_data.parent, tmp_path / "runs", trainer_id="tr-cli")
    gateway = start_gateway(redis_url, redis_prefix, chat_data.parent, tmp_path / "runs")
    yield gateway
    gateway.stop()
    trainer.stop()


def test_submit_watch_list_get_status(cluster, chat_data, tmp_path, capsys):
    from services.client import Client

    spec = tmp_path / "run-with-a-long-name-that-an-80-column-table-would-cut.yaml"
    spec.write_text(
        f"model: tiny-llama\ndata: {chat_data.name}\nmethod: lora\niters: 3\nwarmup_steps: 0\n"
        "eval_every: 0\nsave_every: 0\ntest_samples: 1\nmax_new_tokens: 4\nval_batches: 1\nbatch_size: 2\n"
    )
    gateway = ["--gateway", cluster.address]
    with Client(cluster.address) as client:  # the trainer's one slot taken: the next run queues behind it
        first = client.submit(
            model="tiny-llama", data=chat_data.name, iters=2, warmup_steps=0, eval_every=0, save_every=0,
            test_samples=0, val_batches=1, batch_size=2, max_seq_length=64,
        )  # fmt: skip
        assert first.trainer_id
        assert main([*gateway, "run", "submit", str(spec), "--watch"]) == 0
    out = capsys.readouterr().out
    assert "QUEUED: queued 1st of 1 (next to start); all 1 trainer slot busy (1/1)" in out, out
    assert "SUCCEEDED" in out and "steps 3" in out
    run_id = out.split("run ", 1)[1].split()[0]

    assert main([*gateway, "run", "list", "--status", "succeeded"]) == 0
    listed = capsys.readouterr().out
    assert run_id in listed and spec.stem in listed  # not a TTY: nothing cut to 80 columns
    assert main([*gateway, "run", "list", "--output", "wide"]) == 0
    assert "exact match" in capsys.readouterr().out
    assert main([*gateway, "run", "list", "--output", "json"]) == 0
    runs = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert runs[run_id]["status"] == "RUN_STATUS_SUCCEEDED"
    with pytest.raises(SystemExit, match="valid: queued, placed, running, succeeded"):
        main([*gateway, "run", "list", "--status", "bogus"])
    assert main([*gateway, "run", "get", run_id]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["status"] == "RUN_STATUS_SUCCEEDED" and got["spec"]["iters"] == 3 and got["name"] == spec.stem
    task = got["metrics"]["task"]  # a 0 is kept, not dropped as a proto3 default
    assert "exact_match" in task and task["exact_match"] == runs[run_id]["metrics"]["task"]["exact_match"]
    assert main([*gateway, "status"]) == 0
    status = capsys.readouterr().out
    assert "tr-cli" in status and "succeeded 2" in status

    assert main([*gateway, "run", "cancel", run_id]) == 2
    assert "FAILED_PRECONDITION" in capsys.readouterr().err

    # `peftlab run get ID | head`: the reader gone before the output is written is no traceback.
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    command = [sys.executable, "-m", "services.cli.main", *gateway, "run", "get", run_id]
    done = subprocess.run(command, stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(write)
    assert done.returncode == 141 and "Traceback" not in done.stderr, done.stderr


def test_status_without_the_gateway_shows_redis_and_trainers(
    cluster, redis_url, redis_prefix, monkeypatch, capsys
):
    monkeypatch.setenv("PEFTLAB_REDIS_URL", redis_url)
    monkeypatch.setenv("PEFTLAB_REDIS_PREFIX", redis_prefix)
    monkeypatch.setenv("PEFTLAB_OPTIMIZER_ADDRESS", "127.0.0.1:1")
    assert main(["--gateway", "127.0.0.1:1", "status"]) == 1
    out = capsys.readouterr().out
    assert "the gateway at 127.0.0.1:1 does not answer" in out

    def row(name: str) -> str:
        return next(line for line in out.splitlines() if f" {name} " in line)

    assert "ok" in row("redis") and "down" in row("optimizer") and "ok" in row("trainer tr-cli")


def test_train_resolves_a_model_name_under_the_models_root(chat_data, tmp_path, capsys):
    from services.cli.main import build_parser
    from services.cli.train import build_spec
    from services.common.paths import models_dir

    args = build_parser().parse_args(["train", "--model", "tiny-llama", "--data", str(chat_data)])
    spec = build_spec(args)
    assert spec.model == str(models_dir() / "tiny-llama") and spec.data == str(chat_data)
    with pytest.raises(SystemExit) as missing:
        main(["train", "--model", "no-such-model", "--data", str(chat_data), "--iters", "1"])
    message = str(missing.value)
    assert "no-such-model" in message and str(models_dir()) in message
    assert "huggingface" not in message.lower() and "hub" not in message.lower()
    # A local dataset dir in any format the engine reads (here a parquet train split), as the README's example.
    parquet = tmp_path / "as-parquet"
    parquet.mkdir()
    (parquet / "train.parquet").write_bytes(b"PAR1")
    (parquet / "valid.parquet").write_bytes(b"PAR1")
    args = build_parser().parse_args(["train", "--model", "tiny-llama", "--data", str(parquet)])
    assert build_spec(args).data == str(parquet)


def test_compare_re_attaches_and_saves_the_report(ui_stack, tmp_path, capsys):
    gateway = ["--gateway", ui_stack.gateway.address]
    start = ["compare", "--methods", "lora", "--seeds", "0", "--model", "tiny-llama", "--data", "chat"]
    start += ["--iters", "2", "--test-samples", "0", "--set", "batch_size=2", "--no-wait"]
    assert main([*gateway, *start]) == 0
    out = capsys.readouterr().out
    experiment_id = out.split("comparison ", 1)[1].split(":")[0].strip()
    assert f"peftlab experiment watch {experiment_id}" in out
    # As if the first command had died: a second one follows it to the end and saves every report file.
    assert main([*gateway, "experiment", "watch", experiment_id, "--out", str(tmp_path / "r")]) == 0
    assert "SUCCEEDED" in capsys.readouterr().out
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"report.md", "report.json", "report.html"} <= names
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<table>" in page and "<strong>" in page and "**" not in page
    assert main([*gateway, "experiment", "list"]) == 0
    assert experiment_id in capsys.readouterr().out


def test_bad_spec_file_and_bad_values(cluster, tmp_path, capsys):
    spec = tmp_path / "typo.yaml"
    spec.write_text("rnak: 8\n")
    with pytest.raises(SystemExit, match="did you mean 'rank'"):
        main(["--gateway", cluster.address, "run", "submit", str(spec)])
    spec.write_text("rank: 0\n")
    assert main(["--gateway", cluster.address, "run", "submit", str(spec)]) == 2
    assert "INVALID_ARGUMENT: spec.rank" in capsys.readouterr().err


def test_unreachable_gateway(capsys):
    assert main(["--gateway", "127.0.0.1:1", "run", "list"]) == 2
    assert "UNAVAILABLE" in capsys.readouterr().err
