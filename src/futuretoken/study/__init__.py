"""Studies: arms x seeds trained on one corpus (and on the toy tasks), then compared with a baseline
at matched next-token loss, claim by claim. Orchestration only: the measurements are eval/'s."""

from .compare import compare_runs
from .reproduce import Study, StudySettings, reproduce

__all__ = ["Study", "StudySettings", "compare_runs", "reproduce"]
