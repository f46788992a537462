"""recall: find math documents in web, book and code pools with fastText classifiers.

Owns the math-recall step of the corpus (Qwen2.5-Math / DeepSeekMath style):

* ``features``: the one preprocessing function shared by training and scoring (lowercase,
  strip URLs and markup, keep LaTeX command names, segment Chinese), a numba pass over
  Arrow buffers;
* ``model``: labelled data, class and length balancing, fastText training (deterministic),
  held-out evaluation, model files with their JSON report, batch prediction;
* ``stage``: the ``recall-score`` stage (``math_score``, ``recall_model``; keep, keep-top
  or tag), per-source models and thresholds;
* ``cycle``: the multi-cycle recall loop with domain statistics, reviewable expansion
  candidates and a versioned, resumable work folder;
* ``quality`` (with ``quality_features``, ``quality_stage``; the encoder is corpus/encoder.py): a 0-5 quality
  scorer learnt from a teacher's grades (presence features + ridge head, or a frozen local
  encoder + ridge head), its held-out report, and the ``quality-score`` stage;
* ``cli``: ``mathcorpus recall train | eval | score | cycle``.

It hands documents to the rest of mathcorpus only through the columns ``math_score``,
``recall_model``, ``recall_cycle``, ``quality_score`` and ``quality_model`` of corpus/schema.py,
and imports nothing but corpus/.
"""
