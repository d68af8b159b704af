import pytest

import futuretoken as ft
from futuretoken.config import ConfigError


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(n_embd=100, n_head=3), "n_embd=100 is not divisible by n_head=3"),
        (dict(n_embd=96, dec_head=5), "not divisible by dec_head=5"),
        (dict(horizon=0), "horizon"),
        (dict(gamma=0.0), r"gamma=0.0 must be in \(0, 1\]"),
        (dict(gamma=1.5), "gamma=1.5"),
        (dict(pseudo_len=0), "pseudo_len"),
        (dict(vocab_size=0), "vocab_size=0"),
        (dict(dropout=1.0), "dropout"),
        (dict(decoder_fraction=0.0), "decoder_fraction"),
        (dict(eot_token=70000), "eot_token=70000 is outside the vocabulary"),
        (dict(dec_layer=-1), "dec_layer"),
    ],
)
def test_validation_names_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        ft.ModelConfig(**overrides).validate_for("ftp")  # the encoder's fields fail on construction already


def test_a_model_type_is_checked_on_the_fields_it_uses_only():
    """A GPT has no decoder: dec_head, gamma, ... do not refuse it; FTP, MTP and MTP-seq check theirs."""
    from futuretoken.hf import FTPConfig, GPTConfig

    odd = dict(n_embd=32, n_head=4, dec_head=12, gamma=0.0, mtp_lambda=-1.0, mtp_backward="both")
    assert GPTConfig(**odd).n_embd == 32
    ft.GPT(ft.ModelConfig(**odd, vocab_size=50, block_size=8, n_layer=1))
    ft.RunConfig.from_dict({"model": odd, "train": {"model": "gpt"}})
    for model_type, message in (("ftp", "gamma=0.0"), ("mtp", "mtp_backward='both'"), ("mtp_seq", "mtp_lambda=-1.0")):
        with pytest.raises(ConfigError, match=f"{message}.*model type {model_type}"):
            ft.RunConfig.from_dict({"model": odd, "train": {"model": model_type}})
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            ft.MODELS[model_type](ft.ModelConfig(**odd, vocab_size=50, block_size=8, n_layer=1))
    with pytest.raises(ConfigError, match="gamma=0.0"):
        FTPConfig(**odd)


def test_presets_build_and_override():
    for name in ("tiny", "small", "gpt2-124m"):
        assert ft.ModelConfig.preset(name).n_embd % ft.ModelConfig.preset(name).n_head == 0
    assert ft.ModelConfig.preset("tiny", vocab_size=512).vocab_size == 512
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        ft.ModelConfig.preset("huge")


def test_toml_round_trip(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[model]\npreset = "tiny"\nn_layer = 3\ngamma = 0.5\neot_token = 0\n')
    cfg = ft.ModelConfig.from_toml(path)
    assert (cfg.n_layer, cfg.gamma, cfg.eot_token, cfg.n_embd) == (3, 0.5, 0, 128)


def test_unknown_key_suggests_the_right_one(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text("[model]\nn_layers = 3\n")
    with pytest.raises(ConfigError, match="did you mean 'n_layer'"):
        ft.ModelConfig.from_toml(path)


def test_wrong_type_and_missing_file(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[model]\nn_layer = "three"\n')
    with pytest.raises(ConfigError, match="model.n_layer='three' is not a valid int"):
        ft.ModelConfig.from_toml(path)
    with pytest.raises(ConfigError, match="does not exist"):
        ft.ModelConfig.from_toml(tmp_path / "nope.toml")
