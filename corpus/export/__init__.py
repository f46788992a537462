"""Tokenized export: the last step of the recipe, from documents to trainer-ready token shards.

``tokenize.py`` (HF tokenizers and the verified tiktoken fast path), ``mix.py`` (mix by
source, seeded global shuffle, packing layout, shard cuts), ``writers.py`` (Megatron,
datatrove/nanotron, numpy and Parquet writers, each with a reader), ``stage.py`` (the
``export`` stage on the runner) and ``cli.py`` (``mathcorpus export``).
"""
