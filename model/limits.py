"""The largest model this project builds or serves, defined once: job bodies, checkpoints and request bodies
are all bounded by these numbers, so no layer can accept what another refuses."""
from __future__ import annotations

MAX_SEQ_LENGTH = 64  # a model's sequence length, so also the longest prefix any request may send
MAX_VOCAB = 1000  # tokens are 0..MAX_VOCAB-1
MAX_WIDTH = 512  # embedding and hidden sizes
