"""transformers' own common tests (ModelTesterMixin, ConfigTester, GenerationTesterMixin) on
GPT/FTP/MTP/MTPSeqForCausalLM and their base models, with tiny configs.

tests/hf_common/ holds pinned copies of tests/test_modeling_common.py from the transformers 5.25.0
source distribution (test_modeling_common.py, for 5.25 and later) and from 5.23.0 (the oldest supported
version: test_modeling_common_5_23.py), of tests/test_configuration_common.py (the same in both), and
our own GenerationTesterMixin (transformers ships its generation test file only in its repository).
The copy for the installed transformers is picked below; a new transformers version gets a new copy
from its sdist (`pip download transformers==X --no-deps --no-binary :all:`).

No test is skipped here. The mixins skip 64 tests per class on their own conditions: hardware
and libraries CI does not have (accelerators, MPS, flash attention 2/3/4, kernels, deepspeed),
features these models do not have (composite sub-configs, MoE experts, RoPE, sliding windows,
position-embedding resizing, tensor-parallel plans, checkpoint key conversions, fp32-kept modules,
gradient checkpointing through transformers' API, `capture_outputs`), and one marked slow upstream
(torch.compile training). Runs in about 50 s on 2 CPU cores.
"""

import importlib
import os
import unittest

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")

import transformers  # noqa: E402
from packaging.version import Version  # noqa: E402
from transformers.models.auto import modeling_auto  # noqa: E402

from futuretoken.hf import BASE_MODELS, CAUSAL_LM, CONFIGS  # noqa: E402
from hf_common.generation.test_utils import GenerationTesterMixin  # noqa: E402
from hf_common.test_configuration_common import ConfigTester  # noqa: E402

_COPY = "test_modeling_common" if Version(transformers.__version__) >= Version("5.25") else "test_modeling_common_5_23"
_common = importlib.import_module(f"hf_common.{_COPY}")
ModelTesterMixin, ids_tensor, random_attention_mask = (_common.ModelTesterMixin, _common.ids_tensor,
                                                       _common.random_attention_mask)

# The mixins pick a class's role (base model, causal LM: labels, loss checks) from transformers' name
# tables, which list only built-in models; AutoModel*.register does not add to them. List ours there.
for _kind, _config in CONFIGS.items():
    modeling_auto.MODEL_MAPPING_NAMES.setdefault(_config.model_type, BASE_MODELS[_kind].__name__)
    modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.setdefault(_config.model_type, CAUSAL_LM[_kind].__name__)


class _Tester:
    """Tiny configs and inputs, the attributes the mixins read."""

    def __init__(self, parent, kind: str) -> None:
        self.parent, self.kind = parent, kind
        self.batch_size, self.seq_length, self.vocab_size = 2, 7, 99
        self.hidden_size, self.num_hidden_layers, self.num_attention_heads = 32, 2, 4
        self.is_training, self.use_labels = True, True

    def get_config(self):
        return CONFIGS[self.kind](vocab_size=self.vocab_size, vocab_multiple=8, block_size=64, n_layer=2, n_head=4,
                                  n_embd=32, horizon=3, pseudo_len=2, dec_layer=1, dec_head=4,
                                  bos_token_id=1, eos_token_id=2, pad_token_id=0)

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        mask = random_attention_mask([self.batch_size, self.seq_length])
        return self.get_config(), {"input_ids": input_ids, "attention_mask": mask}


class _Common(ModelTesterMixin, GenerationTesterMixin):
    kind = ""
    test_can_init_all_missing_weights_before_2023 = True  # the check is skipped for files without a copyright year

    def setUp(self):
        self.model_tester = _Tester(self, self.kind)
        self.config_tester = ConfigTester(self, config_class=CONFIGS[self.kind], n_embd=48, n_layer=3)
        self.all_model_classes = (BASE_MODELS[self.kind], CAUSAL_LM[self.kind])

    def test_config(self):
        self.config_tester.run_common_tests()


class TestGPTCommon(_Common, unittest.TestCase):
    kind = "gpt"


class TestFTPCommon(_Common, unittest.TestCase):
    kind = "ftp"


class TestMTPCommon(_Common, unittest.TestCase):
    kind = "mtp"


class TestMTPSeqCommon(_Common, unittest.TestCase):
    kind = "mtp_seq"
