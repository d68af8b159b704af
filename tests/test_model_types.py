"""A fifth model type touches three files: its module, one entry of model.MODELS and one name in
config.MODEL_TYPES. Everything else (training, checkpoints, loading, generation, FLOP counts, the
transformers classes) finds it through the registry; here the type is added the same way, in-process."""

import torch

import futuretoken as ft
from futuretoken import config as config_module
from futuretoken.hf import modeling
from futuretoken.model import GPT, MODELS, training_flops_per_token
from futuretoken.training import train


class Wide(GPT):
    """The fifth type of this test: a GPT under its own name (what it has beside the encoder: nothing)."""

    model_type = "wide"


def add_model_type(monkeypatch) -> None:
    monkeypatch.setitem(MODELS, Wide.model_type, Wide)  # model/__init__.py
    monkeypatch.setattr(config_module, "MODEL_TYPES", (*config_module.MODEL_TYPES, Wide.model_type))  # config.py


def test_a_fifth_model_type_trains_loads_generates_and_wraps(monkeypatch, data_dir, tmp_path):
    from conftest import run_config

    add_model_type(monkeypatch)
    cfg = run_config(data_dir, tmp_path / "run", "wide", max_steps=2, ckpt_interval=2, eval_interval=2)
    assert cfg.train.model == "wide"
    train(cfg)
    model = ft.load(tmp_path / "run")
    assert type(model) is Wide and model.model_type == "wide"
    assert training_flops_per_token(model.config, "wide") == training_flops_per_token(model.config, "gpt")
    prompt = torch.tensor([[1, 2, 3]])
    out = ft.generate(model, prompt, 5, "ar", sampling=ft.SamplingConfig(temperature=0)).tokens
    twin = GPT(model.config)
    twin.load_state_dict(model.state_dict())
    assert torch.equal(out, ft.generate(twin.eval(), prompt, 5, "ar", sampling=ft.SamplingConfig(temperature=0)).tokens)

    config, _, causal_lm = modeling._hf_classes("wide", Wide)
    assert config.__name__ == "WideConfig" and config.model_type == "futuretoken-wide"
    hf = causal_lm.from_module(model.eval())
    torch.testing.assert_close(hf(prompt).logits, model(prompt).logits, rtol=0, atol=0)


def test_without_registering_the_type_the_config_names_the_choices(data_dir, tmp_path):
    import pytest

    from conftest import run_config

    with pytest.raises(ft.ConfigError, match="train.model='wide' is unknown; choose one of gpt, ftp, mtp, mtp_seq"):
        run_config(data_dir, tmp_path / "run", "wide")
