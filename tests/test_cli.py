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
    spec = tmp_path / "run.yaml"
    spec.write_text(
        f"model: tiny-llama\ndata: {chat_data.name}\nmethod: lora\niters: 3\nwarmup_steps: 0\n"
        "eval_every: 0\nsave_every: 0\ntest_samples: 0\nval_batches: 1\nbatch_size: 2\n"
    )
    gateway = ["--gateway", cluster.address]
    assert main([*gateway, "run", "submit", str(spec), "--watch"]) == 0
    out = capsys.readouterr().out
    assert "SUCCEEDED" in out and "steps 3" in out
    run_id = out.split("run ", 1)[1].split()[0]

    assert main([*gateway, "run", "list", "--status", "succeeded"]) == 0
    assert run_id in capsys.readouterr().out
    assert main([*gateway, "run", "get", run_id]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["status"] == "RUN_STATUS_SUCCEEDED" and got["spec"]["iters"] == 3 and got["name"] == "run"
    assert main([*gateway, "status"]) == 0
    status = capsys.readouterr().out
    assert "tr-cli" in status and "succeeded 1" in status

    assert main([*gateway, "run", "cancel", run_id]) == 2
    assert "FAILED_PRECONDITION" in capsys.readouterr().err


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
