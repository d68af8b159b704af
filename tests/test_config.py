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
        ft.ModelConfig(**overrides)


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
