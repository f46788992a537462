"""decontam: keeps corpora free of evaluation benchmarks (the Qwen2.5-Math 13-gram + LCS rule).

Owns the benchmark registry and its bundled data (``benchmarks``), the n-gram index
(``index``), the one-pass byte kernel (``kernel``), LCS-ratio confirmation (``confirm``),
the stage (``stage``), the near-duplicate tier (``fuzzy``), reports (``report``, ``html``)
and the ``mathcorpus decontam`` commands (``cli``, ``report_cli``). Text normalization is
shared with dedup and lives in ``corpus.textnorm``. Imports corpus/ only.
"""
