"""Your own text for the LM workload: `prepare` (corpus -> token files + manifest) and the
token-file source that feeds `config.workload.data`. See `experiments/data/prepare.py`."""

from experiments.data._manifest import CorpusError, load, read, token_dtype
from experiments.data._prepare import prepare
from experiments.data._source import TokenCorpus

__all__ = ["CorpusError", "TokenCorpus", "load", "prepare", "read", "token_dtype"]
