"""Tokenized export: the last step of the recipe, from documents to trainer-ready token shards.

``tokenize.py`` (HF tokenizers and the verified tiktoken fast path), ``mix.py`` (mix by
source, seeded global shuffle, packing layout, shard cuts), ``writers.py`` (Megatron,
datatrove/nanotron, numpy and Parquet writers, each with a reader), ``stage.py`` (the
``export`` stage on the runner), ``sft.py`` (``export --sft``: chat template, assistant-only
loss mask, packing without splitting a conversation), ``cli.py`` (``mathcorpus export`` and
``export blend``), and the trainer side: ``loader.py`` (``TokenDataset``, ``TokenMixture``,
``collate``) over ``loader_formats.py`` (each format as memory-mapped samples).
"""
