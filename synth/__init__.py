"""synth: teacher synthesis (rewrites, QA pairs, rejection-sampled solutions) with provenance.

engines.py runs the teacher (vLLM, OpenAI-compatible HTTP, transformers); tasks.py holds
the versioned prompt templates and verdicts; answers.py extracts and compares answers;
sandbox.py runs tool-integrated-reasoning code; stage.py is the runner glue; cli.py is
``mathcorpus synth`` and composes the decontamination gate through corpus' registry.
"""
