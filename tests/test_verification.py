"""Nothing is read unverified, nothing is mixed up silently: forged sharded checkpoints, files
outside a checkpoint, data folders and tokenizers that are not the ones a run was trained on,
writes into checkpoint folders, checkpoint rotation seen by a reader, trainer states that are
not what they claim."""

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import futuretoken.checkpoint.verify as verify
from conftest import run_config, run_main
from futuretoken.checkpoint import (
    CheckpointError,
    finish_checkpoint,
    latest_valid_checkpoint,
    list_checkpoints,
    load_model,
    run_data_dir,
    temporary_checkpoint_dir,
)
from futuretoken.config import ModelConfig
from futuretoken.data import DataError, TokenShards, prepare
from futuretoken.data.tokenizer import load_tokenizer, train_bpe
from futuretoken.model import MODELS
from futuretoken.storage import sha256_file
from futuretoken.training import Trainer, distributed, train


def repin(ckpt: Path, **changes) -> None:
    """Rewrite meta.json with `changes` and every file of the folder pinned by its current sha256: what
    someone who forges a checkpoint does (the hashes then match the forged files)."""
    meta = {**json.loads((ckpt / "meta.json").read_text()), **changes}
    meta["files"] = {p.relative_to(ckpt).as_posix(): sha256_file(p) for p in sorted(ckpt.rglob("*"))
                     if p.is_file() and not p.is_symlink() and p.name != "meta.json"}
    (ckpt / "meta.json").write_text(json.dumps(meta))


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def make_sharded(run: Path) -> Path:
    """Turn the newest checkpoint of `run` into the sharded layout, written by
    torch.distributed.checkpoint in this process exactly as the trainer's FSDP save names its keys."""
    import torch.distributed.checkpoint as dcp

    ckpt = list_checkpoints(run)[-1]
    weights = ckpt / "model.safetensors"
    state = {"model": {f"model.{k}": v for k, v in load_file(weights).items()}}
    weights.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=str(ckpt / "dcp"))
    repin(ckpt, layout="sharded")
    return ckpt


def rewrite_dcp_metadata(ckpt: Path, change) -> None:
    path = ckpt / "dcp" / ".metadata"
    metadata = pickle.loads(path.read_bytes())
    change(metadata)
    path.write_bytes(pickle.dumps(metadata))
    repin(ckpt)


@pytest.fixture
def sharded_run(trained_runs, tmp_path) -> Path:
    run = copy_run(trained_runs / "ftp", tmp_path / "sharded")
    make_sharded(run)
    return run


def test_a_sharded_checkpoint_loads_the_same_weights_as_the_full_one(trained_runs, sharded_run):
    full, sharded = load_model(trained_runs / "ftp").state_dict(), load_model(sharded_run).state_dict()
    assert full.keys() == sharded.keys() and all(torch.equal(full[k], sharded[k]) for k in full)


# --- sharded checkpoints: confined storage, sizes backed by bytes, dcp's failures ------------------
@pytest.mark.parametrize("where", ["another run's file", "an absolute path"])
def test_a_sharded_checkpoint_reads_only_its_own_files(trained_runs, sharded_run, tmp_path, where):
    other = make_sharded(copy_run(trained_runs / "ftp", tmp_path / "other"))  # a valid checkpoint, same names
    ckpt = list_checkpoints(sharded_run)[-1]
    storage = next((ckpt / "dcp").glob("*.distcp"))
    outside = (other / "dcp" / storage.name) if where == "another run's file" else Path("/etc/hostname")
    target = os.path.relpath(outside, ckpt / "dcp") if where == "another run's file" else str(outside)

    def point_outside(metadata):
        for info in metadata.storage_data.values():
            info.relative_path = target

    rewrite_dcp_metadata(ckpt, point_outside)
    storage.unlink()  # the checkpoint holds no weights of its own
    repin(ckpt)
    with pytest.raises(CheckpointError, match=r"names storage file .* not a file of this checkpoint"):
        load_model(ckpt)


def test_a_forged_sharded_checkpoint_cannot_allocate_beyond_its_bytes(sharded_run):
    ckpt = list_checkpoints(sharded_run)[-1]
    meta = json.loads((ckpt / "meta.json").read_text())
    forged = {**meta["model_config"], "vocab_size": 64 * 600}  # declared, not stored: a 38k-row embedding
    with torch.device("meta"):
        shapes = {f"model.model.{k}": v.shape for k, v in MODELS["ftp"](ModelConfig(**forged))
                  .state_dict().items()}

    def grow(metadata):  # declare the forged config's shapes; the stored bytes stay the small model's
        for fqn, tensor in metadata.state_dict_metadata.items():
            if fqn in shapes and tensor.size != shapes[fqn]:
                tensor.size = shapes[fqn]
                tensor.chunks[0].sizes = shapes[fqn]

    rewrite_dcp_metadata(ckpt, grow)
    repin(ckpt, model_config=forged)
    with pytest.raises(CheckpointError, match=r"declares a chunk of model\.model\.\S+ of \d+ bytes, but stores \d+"):
        load_model(ckpt)


def test_a_failure_inside_a_sharded_load_is_a_checkpoint_error(sharded_run):
    ckpt = list_checkpoints(sharded_run)[-1]
    storage = next((ckpt / "dcp").glob("*.distcp"))
    data = bytearray(storage.read_bytes())
    data[: len(data) // 2] = bytes(len(data) // 2)  # the stored tensors' headers gone, sizes unchanged
    storage.write_bytes(bytes(data))
    repin(ckpt)  # hashes match: only dcp itself can find out
    with pytest.raises(CheckpointError, match=r"cannot be loaded .*use an earlier checkpoint"):
        load_model(ckpt)


def test_plain_values_in_a_sharded_checkpoint_never_unpickle_code(tmp_path):
    """dcp stores non-tensor optimizer state (param_groups) as pickles and loads them with
    weights_only=False; ours are loaded weights_only, so a forged one cannot run code on --resume."""
    import torch.distributed.checkpoint as dcp

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    state = distributed._sharded_state(model, optimizer)
    state["optim"]["param_groups"][0]["lr"] = Exploit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=str(tmp_path / "dcp"))
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        distributed.load_sharded(model, optimizer, tmp_path / "dcp")
    assert not marker.exists()


def test_a_symbolic_link_in_a_checkpoint_is_refused(trained_runs, tmp_path):
    run = copy_run(trained_runs / "ftp", tmp_path / "run")
    ckpt = list_checkpoints(run)[-1]
    outside = tmp_path / "outside.safetensors"
    shutil.move(ckpt / "model.safetensors", outside)
    (ckpt / "model.safetensors").symlink_to(outside)  # same bytes, same hash: but not the checkpoint's own file
    with pytest.raises(CheckpointError, match="is a symbolic link"):
        load_model(ckpt)


# --- trainer.pt: weights_only and checked field by field ------------------------------------------
TRAINER_STATE_DAMAGE = {
    "a pickle that runs code": lambda state, marker: pickle.dumps(
        {**state, "optimizer": type("E", (), {"__reduce__": lambda self: (os.system, (f"touch {marker}",))})()}),
    "a step that is a string": lambda state, marker: _saved({**state, "step": "8"}),
    "no optimizer": lambda state, marker: _saved({k: v for k, v in state.items() if k != "optimizer"}),
    "an rng state of the wrong size": lambda state, marker: _saved({**state, "rng": [{"cpu": torch.zeros(3, dtype=torch.uint8)}]}),
    "an optimizer of another model": lambda state, marker: _saved(_with_moment_of_another_shape(state)),
}


def _with_moment_of_another_shape(state: dict) -> dict:
    name = next(iter(state["optimizer"]["state"]))  # keyed by parameter name
    state["optimizer"]["state"][name]["exp_avg"] = torch.zeros(7)
    return state


def _saved(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("damage", TRAINER_STATE_DAMAGE)
def test_a_forged_trainer_state_is_a_clear_error_on_resume(trained_runs, data_dir, tmp_path, damage):
    run = copy_run(trained_runs / "ftp", tmp_path / "run")
    ckpt = list_checkpoints(run)[-1]
    marker = tmp_path / "pwned"
    state = torch.load(ckpt / "trainer.pt", weights_only=True)
    (ckpt / "trainer.pt").write_bytes(TRAINER_STATE_DAMAGE[damage](state, marker))
    repin(ckpt)
    with pytest.raises(CheckpointError, match=r"trainer\.pt .*Fix: resume from an earlier checkpoint") as err:
        Trainer(run_config(data_dir, run, "ftp", max_steps=10, ckpt_interval=8, eval_interval=8), resume=True)
    assert "weights_only=False" not in str(err.value) and not marker.exists()


# --- rotation: a reader always finds a checkpoint ------------------------------------------------
def test_a_reader_never_sees_no_checkpoint_while_a_training_rotates_them(trained_runs, tmp_path, monkeypatch):
    """The worst interleaving, made deterministic: the reader lists the folder (step 8 only), then a
    training with keep_last=1 puts step 9 in place and removes step 8, then the reader checks step 8."""
    run = copy_run(trained_runs / "ftp", tmp_path / "run")
    (old,) = list_checkpoints(run)
    meta = {k: v for k, v in json.loads((old / "meta.json").read_text()).items()
            if k not in ("format", "futuretoken", "step", "files")}
    real_read, calls = verify.read_checkpoint, []

    def read_after_a_rotation(ckpt, verify=True):
        if not calls:
            tmp = temporary_checkpoint_dir(run, 9)
            for name in ("model.safetensors", "trainer.pt"):
                shutil.copy(old / name, tmp / name)
            finish_checkpoint(tmp, 9, meta, keep_last=1)
        calls.append(ckpt.name)
        return real_read(ckpt, verify)

    monkeypatch.setattr(verify, "read_checkpoint", read_after_a_rotation)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "skipping checkpoint": nothing corrupt was seen
        assert latest_valid_checkpoint(run).name == "step-0000009"
    assert calls == ["step-0000008", "step-0000009"]
    assert not list(run.glob("checkpoints/.*"))  # the old one is gone, no temporary left


# --- a float64 run stays float64 -----------------------------------------------------------------
def test_a_float64_checkpoint_is_loaded_in_float64(data_dir, tmp_path):
    run = tmp_path / "run"
    train(run_config(data_dir, run, "gpt", max_steps=2, ckpt_interval=2, eval_interval=2, dtype="float64"))
    ckpt = list_checkpoints(run)[-1]
    weights = load_file(ckpt / "model.safetensors")
    name = next(k for k, v in weights.items() if v.dtype == torch.float64)
    weights[name].view(-1)[0] = 1e300  # finite in float64, infinite in float32
    save_file(weights, ckpt / "model.safetensors")
    repin(ckpt)
    model = load_model(ckpt)
    state = model.state_dict()
    assert next(model.parameters()).dtype == torch.float64
    assert all(torch.equal(state[k], weights[k]) for k in weights)


# --- data folders: what the config names, what run.json records -----------------------------------
@pytest.mark.parametrize("field,value", [("corpus", "builtin:prose"), ("tokenizer", "bpe:4096"),
                                         ("val_fraction", 0.05)])
def test_train_refuses_a_data_folder_prepared_from_something_else(data_dir, tmp_path, field, value):
    cfg = run_config(data_dir, tmp_path / "run", max_steps=2)
    setattr(cfg.data, field, value)
    with pytest.raises(DataError, match=rf"{data_dir} was prepared from {field} .*asked: {value!r}.*Fix: set "
                                        r"data.dir to a new folder"):
        Trainer(cfg)
    assert not list_checkpoints(tmp_path / "run")


def test_run_json_records_the_data_and_tokenizer_trained_on(data_dir, tmp_path):
    manifest = json.loads((data_dir / "manifest.json").read_text())
    cfg = run_config(data_dir, tmp_path / "run", max_steps=1, ckpt_interval=1, eval_interval=1)
    cfg.data.corpus = "./" + os.path.relpath(manifest["corpus"])  # the same files, written another way
    cfg.data.tokenizer = str(data_dir / "tokenizer.json")  # the same tokenizer, named by its file
    train(cfg)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["data"]["corpus"] == manifest["corpus"] and record["data"]["tokenizer"] == manifest["tokenizer"]
    assert record["data"]["val_fraction"] == manifest["val_fraction"]
    assert record["tokenizer_sha256"] == manifest["tokenizer_sha256"] == sha256_file(data_dir / "tokenizer.json")
    assert record["manifest_sha256"] == sha256_file(data_dir / "manifest.json")
    meta = json.loads((list_checkpoints(tmp_path / "run")[-1] / "meta.json").read_text())
    assert meta["tokenizer_sha256"] == record["tokenizer_sha256"] and meta["data_sha256"] == record["data_sha256"]


def test_measurements_refuse_a_data_folder_prepared_again(data_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    train(run_config(data, tmp_path / "run", max_steps=1, ckpt_interval=1, eval_interval=1))
    assert run_data_dir(tmp_path / "run") == data
    manifest = json.loads((data / "manifest.json").read_text())
    prepare(corpus=manifest["corpus"], tokenizer="bpe:300", out_dir=data, val_fraction=0.1, seed=1)  # another split
    with pytest.raises(CheckpointError, match=r"holds other data than .* was trained on"):
        run_data_dir(tmp_path / "run")


def test_a_manifest_never_points_outside_its_folder(data_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    (tmp_path / "elsewhere").mkdir()
    shutil.move(data / "train_000.bin", tmp_path / "elsewhere" / "train_000.bin")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["train"]["shards"][0]["file"] = "../elsewhere/train_000.bin"
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"manifest.json is malformed: train shard .* is not \{file: train_NNN.bin"):
        TokenShards(data, "train")


# --- the run's tokenizer is the one it was trained with -------------------------------------------
@pytest.fixture
def run_with_another_tokenizer(trained_runs, tmp_path) -> Path:
    """A run whose tokenizer.json was replaced by another BPE of the same size."""
    run = copy_run(trained_runs / "ftp", tmp_path / "run")
    vocab = json.loads((run / "run.json").read_text())["model"]["vocab_size"]
    other = train_bpe([" ".join(f"{i * j % 97}q{j % 31}" for j in range(300)) for i in range(40)], 300)
    assert other.vocab_size == vocab
    other.save(run)
    return run


def test_a_run_whose_tokenizer_was_swapped_is_refused(run_with_another_tokenizer, capsys):
    with pytest.raises(CheckpointError, match=r"tokenizer.json is not the tokenizer .* was trained with.*Fix: copy"):
        load_model(run_with_another_tokenizer)
    with pytest.raises(DataError, match=r"tokenizer.json is not the tokenizer .*run.json pins"):
        load_tokenizer(run_with_another_tokenizer)
    for args in (["generate", str(run_with_another_tokenizer), "Fellow", "--max-new-tokens", "2"],
                 ["export-hf", str(run_with_another_tokenizer), str(run_with_another_tokenizer.parent / "hf")]):
        code, _, err = run_main(capsys, *args)
        assert code == 2 and "is not the tokenizer" in err and "Traceback" not in err


# --- commands never write into a checkpoint or a run's own files -----------------------------------
def test_commands_refuse_to_write_into_a_checkpoint_folder(trained_runs, tmp_path, capsys):
    run = copy_run(trained_runs / "gpt", tmp_path / "run")
    ckpt = list_checkpoints(run)[-1]
    texts = tmp_path / "texts.txt"
    texts.write_text("alpha beta\ngamma\n")
    for args in (["export-hf", str(run), str(ckpt)],
                 ["embed", str(run), str(texts), "--out", str(ckpt / "vectors.npy")],
                 ["embed", str(run), str(texts), "--out", str(run / "checkpoints" / "vectors.npy")],
                 ["data", "prepare", "--corpus", str(texts), "--tokenizer", "bpe:300", "--out", str(run)]):
        code, _, err = run_main(capsys, *args)
        assert code == 2, (args, err)
        assert "is inside the checkpoint folder" in err or "is a run folder" in err, err
    assert latest_valid_checkpoint(run) == ckpt  # still valid: nothing was written into it
    assert sha256_file(run / "tokenizer.json") == sha256_file(trained_runs / "gpt" / "tokenizer.json")
