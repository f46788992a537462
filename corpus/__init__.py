"""corpus: the floor of mathcorpus.

Owns the document schema, sharded I/O, the stage runner on datatrove executors,
configuration, the CLI root, stats, dedup and tokenized export. Nothing here imports
recall/, decontam/ or synth/: those register themselves through entry points.
"""

__version__ = "0.1.0"
