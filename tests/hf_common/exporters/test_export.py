"""Stand-in for transformers' tests/exporters/test_export.py, which test_modeling_common.py imports but the
5.23.0 source distribution does not ship (and whose repository version needs exporters 5.23.0 lacks).
Export of our models is tested by tests/test_hf_common.py::test_torch_export_with_attention_mask."""


class ExportTesterMixin:
    pass
