# The mixins here are run by tests/test_hf_common.py; collecting these files on their own would run nothing.
collect_ignore_glob = ["*.py", "*/*.py"]
