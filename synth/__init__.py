"""synth: teacher synthesis (rewrites, QA pairs, rejection-sampled solutions, quality grades) with provenance.

The teacher (vLLM, OpenAI-compatible HTTP, transformers) runs through corpus.teacher; tasks.py
holds the versioned prompt templates and verdicts; answers.py extracts and compares answers;
annotate.py parses quality grades strictly; sandbox.py runs tool-integrated-reasoning code;
stage.py is the runner glue; cli.py is ``mathcorpus synth`` and composes the decontamination
gate through corpus' registry.
"""
