"""`config_common_kwargs` for ConfigTester.check_config_arguments_init (transformers keeps it in
tests/utils/test_configuration_utils.py, which its source distribution does not ship): non-default
values of attributes every PreTrainedConfig has, each of which must survive construction."""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["FTPForCausalLM"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
