"""Exact and MinHash-LSH near-duplicate removal across all shards and workers (``mathcorpus dedup``).

Owns the ``dedup-exact`` and ``dedup-minhash`` stages, their pure functions (hashing,
signatures, LSH parameters, bucket matching, clustering, the keep rule) and the on-disk
formats of their global steps. Both stages run as a chain of datatrove phases through
:mod:`corpus.runner`, so they work on the Local, Slurm and Ray executors alike:

exact
    ``hash`` (one task per input share) writes, per task, the 128-bit hash of every
    document's normalized text plus what the keep rule needs, sorted by hash;
    ``clusters`` (one task per hash range) groups equal hashes across *all* tasks and picks
    the document to keep; the map phase then filters each batch.

minhash
    ``signatures`` (one task per input share) computes MinHash signatures for whole Arrow
    batches with numba kernels (tokens hashed with xxh64, n-gram shingles, universal
    hashing modulo the Mersenne prime 2**61-1, exactly datatrove's permutation family and
    seeds) and writes one sorted run per LSH band in datatrove's ``.minhash.sig`` record
    format; ``buckets`` (one task per band) finds equal band signatures with a windowed,
    vectorized k-way merge and writes datatrove-format ``.dups`` pairs; ``clusters``
    (one task) checks every candidate pair on its whole signature (estimated Jaccard at
    least the threshold; ``verify``), joins the pairs with union-find and applies the keep
    rule; the map phase filters each batch.

Document identity inside a run is ``(rank, idx)``: the task and the position of the
document in that task's input stream. Every phase reads a task's files in the same order
with the same batches, so the position is stable, and the keep rule orders ties by it,
which is the global input order whatever the number of tasks or workers.

Keep rule (one document per cluster): highest ``math_score`` (documents without one come
last), then the longest text (in characters), then the smallest ``id``, then input order.
Removed documents carry ``dedup_cluster`` and ``dedup_kept_id`` and the reason
``dedup:exact`` or ``dedup:minhash``; kept documents that belong to a cluster get the same
two columns (``dedup_kept_id`` is then their own id).

Tokens and shingles follow :mod:`corpus.textnorm` (the decontam normalization): each CJK
character is a token, other text is split into words, digits are kept. It runs as numba
kernels over the Arrow byte buffers: ASCII directly, other characters through a table of
``NFKC(ch).lower()`` built from ``unicodedata`` for every character whose normalization
does not depend on its neighbours; the rare documents holding any other character
(combining marks, Hangul jamo, astral symbols) go through
:func:`corpus.textnorm.normalize_text` itself. Tests check the kernels equal
:func:`corpus.textnorm.tokenize` on random and on every BMP character.

Files: ``exact.py`` (the ``dedup-exact`` stage), ``minhash.py`` (the ``dedup-minhash``
stage), ``kernels.py`` (numba kernels), ``text.py`` (batches of texts to normalized bytes,
tokens, hashes and signatures), ``lsh.py`` (bands x rows, the bucket step), ``clusters.py``
(the keep rule and cluster table of the global step), ``stage.py`` (glue shared by both
stages: work files, the map phase) and ``cli.py`` (``mathcorpus dedup``).
"""
