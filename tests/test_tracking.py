"""train.tracker: TensorBoard event files and a W&B offline run hold the scalars of metrics.jsonl."""

import json

import pytest

from conftest import run_config
from futuretoken.checkpoint import read_metrics
from futuretoken.config import ConfigError
from futuretoken.training import train
from futuretoken.training.tracking import scalars


def _expected(run_dir) -> dict[str, dict[int, float]]:
    """tag -> step -> value, from metrics.jsonl."""
    out: dict[str, dict[int, float]] = {}
    for record in read_metrics(run_dir):
        for tag, value in scalars(record).items():
            out.setdefault(tag, {})[record["step"]] = value
    return out


def test_scalars_name_split_key_and_distance():
    record = {"step": 5, "split": "train", "loss": 2.5, "per_distance": [2.0, 3.0], "lr": 1e-3, "grad_norm": 0.7}
    assert scalars(record) == {"train/loss": 2.5, "train/per_distance/1": 2.0, "train/per_distance/2": 3.0,
                               "train/lr": 1e-3, "train/grad_norm": 0.7}


def test_tensorboard_events_hold_the_metrics_and_a_resume_purges_the_steps_it_redoes(data_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = run_config(data_dir, tmp_path / "run", "ftp", max_steps=8, log_interval=2, eval_interval=4,
                     ckpt_interval=4, tracker="tensorboard")
    train(cfg)
    want = _expected(tmp_path / "run")
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/per_distance/3",
            "val/next_token_loss"} <= set(want)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(want)
    for tag, by_step in want.items():
        got = {e.step: e.value for e in events.Scalars(tag)}
        assert got == pytest.approx(by_step, rel=1e-6), tag
    assert all(v > 0 for v in want["train/grad_norm"].values())


def _wandb_records(path):
    """The records of a W&B transaction log (RUN/wandb/offline-run-*/run-ID.wandb): a 7-byte header, then
    LevelDB's log format (32 KiB blocks of [crc 4, length 2, type 1] + data; a record may span blocks).
    wandb ships no Python reader of it, so the test reads it here."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4: pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7: pos + 7 + length], pos + 7 + length
        if kind == 1:  # full
            yield chunk
        elif kind in (2, 3):  # first, middle
            pending = chunk if kind == 2 else pending + chunk
        elif kind == 4:  # last
            yield pending + chunk


def test_wandb_offline_run_logs_every_scalar_at_its_step(data_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from wandb.proto import wandb_internal_pb2

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(run_config(data_dir, tmp_path / "run", "gpt", max_steps=4, log_interval=2, eval_interval=4,
                     ckpt_interval=4, tracker="wandb"))
    want = _expected(tmp_path / "run")
    [log] = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    got: dict[str, dict[int, float]] = {}
    config = None
    for data in _wandb_records(log):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            step = row.get("_step", record.history.step.num)
            for tag, value in row.items():
                if not tag.startswith("_"):
                    got.setdefault(tag, {})[step] = value
        elif record.WhichOneof("record_type") == "run":
            config = {item.key for item in record.run.config.update}
    assert set(got) == set(want) and "train/grad_norm" in got
    for tag, by_step in want.items():
        assert got[tag] == pytest.approx(by_step), tag
    assert {"model", "data", "train"} <= config
    assert (tmp_path / "run" / "wandb-id").is_file()


def test_an_unknown_tracker_is_refused_with_the_choices(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="train.tracker='mlflow' is unknown; choose one of none, tensorboard, wandb"):
        run_config(data_dir, tmp_path / "run", tracker="mlflow")
