"""``mathcorpus recall``: train, evaluate and apply math-recall classifiers, and run recall cycles.

Registered under the root CLI by the ``mathcorpus.commands`` entry point ``recall``.
Commands are thin: they resolve configs (file, then flags) and call recall.model,
recall.stage (through the stage runner) and recall.cycle.
"""

from __future__ import annotations

from typing import Any

import click

from corpus.cli import (config_file_option, emit, inputs_argument, json_option, output_option, run_options_from_kwargs,
                        runner_options, summary_line)
from corpus.config import config_options, load_config_file, resolve
from corpus.errors import ConfigError
from recall.cycle import CycleConfig
from recall.model import TrainConfig
from recall.quality import QualityTrainConfig
from recall.stage import ScoreConfig


@click.group("recall")
def recall_group() -> None:
    """Math recall: fastText classifiers and the DeepSeekMath multi-cycle recall loop.

    \b
    Example:
      mathcorpus recall train --data labelled.jsonl.gz -o models/web.bin
      mathcorpus recall score shards/ -o math/ --model models/web.bin --threshold 0.5
      mathcorpus recall cycle --seed seed.jsonl --pool pool/ --workdir runs/recall --cycles 4
    """


def _fmt(v: Any, digits: int = 4) -> str:
    return "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def _print_eval(ev: dict[str, Any] | None, title: str = "held-out evaluation") -> None:
    if not ev:
        click.echo(f"{title}: none (eval_fraction is 0)")
        return
    click.echo(f"{title}: n={ev['n']:,} (math {ev['math']:,}, non_math {ev['non_math']:,}) at threshold "
               f"{ev['threshold']}: precision {_fmt(ev['precision'])}, recall {_fmt(ev['recall'])}, "
               f"F1 {_fmt(ev['f1'])}, ROC-AUC {_fmt(ev['roc_auc'])}")
    t = ev.get("at_target_precision")
    if t:
        click.echo(f"  threshold for precision >= {t['target_precision']}: {t['threshold']:.4f} "
                   f"(precision {t['precision']:.4f}, recall {t['recall']:.4f})")
    for name, row in (ev.get("by_group") or {}).items():
        parts = [f"n={row['n']:,}"]
        if "recall" in row:
            parts.append(f"recall {row['recall']:.4f}")
        if "false_positive_rate" in row:
            parts.append(f"false positives {row['false_positive_rate']:.4f}")
        click.echo(f"  {name or '(none)'}: " + ", ".join(parts))


# ----------------------------------------------------------------------------- train
@recall_group.command("train")
@click.option("--kind", type=click.Choice(["math", "quality"]), default="math", show_default=True,
              help="math: a fastText math classifier (--data); quality: a 0-5 quality scorer trained on "
                   "teacher grades (--labels, --scorer).")
@click.option("--data", "data", multiple=True, metavar="FILE",
              help="Labelled records (text, label = math | non_math); repeat for more files.")
@click.option("--labels", "labels", multiple=True, metavar="LABELS",
              help="--kind quality: graded documents: a `synth run --task annotate` output folder as it is, or "
                   "shards with text and a 0-5 score column; repeat for more.")
@click.option("-o", "--output", required=True, metavar="MODEL",
              help="Model file to write (MODEL.bin for math, Q.npz for quality); its evaluation and config go "
                   "to MODEL.json beside it.")
@config_options(TrainConfig)
@config_options(QualityTrainConfig, exclude=TrainConfig.field_names())
@config_file_option
@json_option
def train_command(kind: str, data: tuple[str, ...], labels: tuple[str, ...], output: str, config_file: str | None,
                  as_json: bool, **kwargs: Any) -> None:
    """Train a fastText math classifier, or a quality scorer, and evaluate it on a held-out split.

    Math: classes are balanced, and documents are cropped so both classes have the same
    length distribution. The evaluation (precision, recall, F1, ROC-AUC, threshold for a
    target precision), the config and the data hashes are printed and saved in MODEL.json.

    Quality (--kind quality): learns the teacher's 0-5 grades. --scorer fasttext (default)
    uses presence features of fastText's tokens with a ridge head; --scorer encoder a frozen
    local encoder (--encoder PATH) with a ridge head on pooled embeddings. The report gives
    Spearman against the teacher, per-class F1, F1 at >= 3 and the share kept per threshold.

    \b
    Example:
      mathcorpus recall train --data math.jsonl.gz --data news.jsonl.gz -o models/en-web.bin \\
          --lang en --source web
      mathcorpus recall train --kind quality --labels grades/ -o models/quality.npz
      mathcorpus recall train --kind quality --labels grades/ -o models/quality-e5.npz \\
          --scorer encoder --encoder models/multilingual-e5-small
    """
    from recall.model import sidecar_path, train_files

    quality_only = {k for k in QualityTrainConfig.field_names() if k not in TrainConfig.field_names()}
    if kind == "quality":
        _train_quality(labels, data, output, config_file, as_json, kwargs)
        return
    given = sorted(k for k in quality_only if kwargs.get(k) is not None)
    if labels or given:
        flags = ", ".join(["--labels"] * bool(labels) + ["--" + k.replace("_", "-") for k in given])
        raise ConfigError(f"{flags} apply to --kind quality; add --kind quality or drop them")
    if not data:
        raise ConfigError("recall train needs --data FILE (labelled math / non_math records)")
    cfg = resolve(TrainConfig, config_file, {k: v for k, v in kwargs.items() if k not in quality_only},
                  section=TrainConfig.section)
    click.echo(f"training on {', '.join(data)} ...", err=True)
    report = train_files(list(data), output, cfg)

    def human(r: dict[str, Any]) -> None:
        d = r["data"]
        used = d["balance"]["used"]
        click.echo(f"model: {output} ({r['tag']}), lang {r['lang']}, source {r['source']}, "
                   f"segmenter {r['preprocess']['segmenter']}")
        click.echo(f"data: {d['records']:,} records ({d['train_records']:,} train, {d['eval_records']:,} held out); "
                   f"trained on {used['math']:,} math + {used['non_math']:,} non_math after balancing")
        _print_eval(r.get("eval"))
        lm = r.get("eval_length_matched")
        if lm:
            click.echo(f"  length-matched held-out: F1 {_fmt(lm['f1'])}, ROC-AUC {_fmt(lm['roc_auc'])}")
        click.echo(f"report: {sidecar_path(output)}")

    emit(report, as_json, human)


def _train_quality(labels: tuple[str, ...], data: tuple[str, ...], output: str, config_file: str | None,
                   as_json: bool, kwargs: dict[str, Any]) -> None:
    from recall.quality import sidecar_path as quality_sidecar, train_quality_files

    if data:
        raise ConfigError("--kind quality reads graded documents from --labels, not --data")
    if not labels:
        raise ConfigError("recall train --kind quality needs --labels LABELS (a `synth run --task annotate` output "
                          "folder, or shards with text and a 0-5 score column)")
    names = set(QualityTrainConfig.field_names())
    wrong = sorted(k for k, v in kwargs.items() if v is not None and k not in names)
    if wrong:
        raise ConfigError(f"{', '.join('--' + k.replace('_', '-') for k in wrong)} apply to math models, not "
                          "--kind quality")
    cfg = resolve(QualityTrainConfig, config_file, {k: v for k, v in kwargs.items() if k in names},
                  section=QualityTrainConfig.section)
    report = train_quality_files(list(labels), output, cfg, log=lambda m: click.echo(m, err=True))

    def human(r: dict[str, Any]) -> None:
        d = r["data"]
        click.echo(f"quality model: {output} ({r['tag']}), scorer {r['scorer']}")
        click.echo(f"data: {d['records']:,} graded documents ({d['train_records']:,} train, "
                   f"{d['eval_records']:,} held out), grade column '{d['score_column']}'")
        ev = r.get("eval")
        if not ev:
            click.echo("held-out evaluation: none (eval_fraction is 0)")
        else:
            click.echo(f"held-out: n={ev['n']:,}, Spearman {_fmt(ev['spearman'], 3)} vs the teacher, MAE "
                       f"{_fmt(ev['mae'], 3)}, F1 at >= 3 {_fmt(ev['f1_at_3'], 3)}, macro F1 {_fmt(ev['macro_f1'], 3)}")
            click.echo("  per grade F1: " + ", ".join(f"{c}: {_fmt(v['f1'], 2)} (n={v['support']})"
                                                     for c, v in ev["per_class"].items()))
            click.echo("  kept at threshold (model / teacher): " + ", ".join(
                f">={t}: {_fmt(v['kept_share'], 2)}/{_fmt(v['teacher_share'], 2)}" for t, v in ev["at_threshold"].items()))
        click.echo(f"report: {quality_sidecar(output)}")

    emit(report, as_json, human)


# ----------------------------------------------------------------------------- eval
@recall_group.command("eval")
@click.option("--model", required=True, metavar="MODEL.bin", help="Model from `recall train`.")
@click.option("--data", "data", multiple=True, required=True, metavar="FILE",
              help="Labelled records (text, label); repeat for more files.")
@click.option("--threshold", type=float, default=0.5, show_default=True, help="Decision threshold.")
@click.option("--target-precision", type=float, default=0.95, show_default=True,
              help="Also report the threshold reaching this precision.")
@click.option("--lang", type=click.Choice(["en", "zh", "auto"]), default="auto", show_default=True,
              help="Keep only records of this lang (when there is a lang column).")
@click.option("--group-by", default="source", show_default=True,
              help="Column for the per-group breakdown (struct fields as meta.repo).")
@json_option
def eval_command(model: str, data: tuple[str, ...], threshold: float, target_precision: float, lang: str,
                 group_by: str, as_json: bool) -> None:
    """Evaluate a model on labelled data, per group (e.g. a source it never saw in training).

    \b
    Example:
      mathcorpus recall eval --model models/en-web.bin --data aqua.jsonl --group-by meta.repo
    """
    from recall.model import evaluate_files

    if not 0 <= threshold <= 1:
        raise ConfigError(f"--threshold must be in [0, 1], got {threshold}")
    rep = evaluate_files(model, list(data), lang=lang, group_by=group_by, threshold=threshold,
                         target_precision=target_precision)
    emit(rep, as_json, lambda r: (click.echo(f"model: {r['model']}"), _print_eval(r, "evaluation")))


# ----------------------------------------------------------------------------- score
@recall_group.command("score")
@inputs_argument
@output_option
@click.option("--model", default=None, metavar="MODEL.bin", help="Model from `recall train`.")
@click.option("--threshold", type=float, default=None,
              help="Keep documents with math_score >= T (default 0.5).")
@click.option("--keep-top", type=float, default=None, metavar="R",
              help="Keep the fraction R (0..1] of documents with the highest math_score instead.")
@click.option("--tag-only/--no-tag-only", default=None, help="Keep every document; only add the columns.")
@click.option("--source-models", default=None, metavar="SRC=MODEL,...",
              help="Per-source models chosen by the source column, e.g. web=web.bin,code=code.bin.")
@click.option("--source-thresholds", default=None, metavar="SRC=T,...",
              help="Per-source thresholds, e.g. web=0.6,code=0.4.")
@click.option("--default-source", default=None, help="Source assumed for documents without one [default: web].")
@click.option("--min-quality", type=float, default=None, metavar="Q",
              help="With a quality model (recall train --kind quality): keep documents with quality_score >= Q "
                   "(0-5) [default: 3].")
@click.option("--device", default=None, help="Quality models of the encoder kind: torch device for scoring "
                                             "(default: the one it was trained on).")
@click.option("--batch-size", type=int, default=None,
              help="Quality models of the encoder kind: documents per forward pass (default: as trained).")
@runner_options
@config_file_option
@json_option
def score_command(inputs: tuple[str, ...], output: str, config_file: str | None, as_json: bool,
                  min_quality: float | None, device: str | None, batch_size: int | None, **kwargs: Any) -> None:
    """Add math_score (probability of math) and recall_model, then keep or tag documents.

    Runs on the stage runner (local, Slurm or Ray); removed documents go to OUTPUT/_removed
    with removal_reason recall:below_threshold. Given a quality model (from `recall train
    --kind quality`), it adds quality_score (0-5) and quality_model instead, and removes
    documents below --min-quality with reason recall:below_quality (the quality-score stage).

    \b
    Example:
      mathcorpus recall score shards/ -o math/ --model models/en-web.bin --threshold 0.6
      mathcorpus recall score shards/ -o tagged/ --model models/en-web.bin --tag-only
      mathcorpus recall score pool/ -o top/ --config runs/recall/score.yaml --keep-top 0.1
      mathcorpus recall score math/ -o good/ --model models/quality.npz --min-quality 3
    """
    from corpus.runner import run_stage
    from recall.quality import is_quality_model
    from recall.stage import ScoreStage

    opts = run_options_from_kwargs(kwargs, config_file)
    model = kwargs.get("model")
    if model and is_quality_model(model):
        _score_quality(inputs, output, model, min_quality, config_file, as_json, opts,
                       kwargs | {"device": device, "batch_size": batch_size})
        return
    for flag, value in (("--min-quality", min_quality), ("--device", device), ("--batch-size", batch_size)):
        if value is not None:
            raise ConfigError(f"{flag} needs a quality model; {model or 'the model'} is a math classifier "
                              "(train one with `recall train --kind quality`)")
    cfg = _resolve_score(config_file, kwargs)
    summary = run_stage(ScoreStage(cfg), list(inputs), output, opts)

    def human(s: dict[str, Any]) -> None:
        click.echo(summary_line(s))
        rec = s.get("recall", {})
        if rec:
            click.echo(f"models: {', '.join(f'{k}={v}' for k, v in rec['models'].items())}")
            if rec.get("keep_top_threshold") is not None:
                click.echo(f"keep-top {rec['keep_top']}: threshold {rec['keep_top_threshold']:.4f}")
            counts = rec["histogram"]["counts"]
            total = sum(counts) or 1
            click.echo("math_score histogram (20 bins over 0..1): " + " ".join(f"{c / total:.2f}" for c in counts))

    emit(summary, as_json, human)


def _score_quality(inputs: tuple[str, ...], output: str, model: str, min_quality: float | None,
                   config_file: str | None, as_json: bool, opts: Any, kwargs: dict[str, Any]) -> None:
    from corpus.runner import run_stage
    from recall.quality_stage import QualityScoreConfig, QualityScoreStage

    math_only = ("threshold", "keep_top", "source_models", "source_thresholds", "default_source")
    wrong = [k for k in math_only if kwargs.get(k) is not None]
    if wrong:
        raise ConfigError(f"{', '.join('--' + k.replace('_', '-') for k in wrong)} apply to math models; "
                          f"{model} is a quality model: use --min-quality")
    cfg = resolve(QualityScoreConfig, config_file, {"model": model, "min_quality": min_quality,
                                                    "tag_only": kwargs.get("tag_only"), "device": kwargs.get("device"),
                                                    "batch_size": kwargs.get("batch_size")},
                  section=QualityScoreConfig.section)
    summary = run_stage(QualityScoreStage(cfg), list(inputs), output, opts)

    def human(s: dict[str, Any]) -> None:
        click.echo(summary_line(s))
        q = s.get("quality", {})
        if q:
            counts = q["histogram"]["counts"]
            total = sum(counts) or 1
            click.echo(f"quality model: {q['model']} ({q['scorer']}); kept quality_score >= {q['min_quality']}: "
                       f"{_fmt(q['kept_share'], 3)}")
            click.echo("quality_score histogram (half-point bins over 0..5): "
                       + " ".join(f"{c / total:.2f}" for c in counts))

    emit(summary, as_json, human)


def _resolve_score(config_file: str | None, kwargs: dict[str, Any]) -> ScoreConfig:
    """ScoreConfig from the file (its recall_score section, or its top level as W/score.yaml
    writes it, minus the executor section), overridden by the flags given."""
    overrides = {k: v for k, v in kwargs.items() if k in ScoreConfig.field_names() and v is not None}
    data: dict[str, Any] = {}
    if config_file:
        data = load_config_file(config_file)
        if isinstance(data.get(ScoreConfig.section), dict):
            data = data[ScoreConfig.section]
        data = {k: v for k, v in data.items() if k != "executor"}
    data.update(overrides)
    return ScoreConfig.from_mapping(data, source=config_file or "command line")


# ----------------------------------------------------------------------------- cycle
@recall_group.command("cycle")
@click.option("--seed", "seed", multiple=True, metavar="POS", help="Seed math documents; repeat for more files.")
@click.option("--pool", "pool", multiple=True, metavar="POOL", help="Pool to recall from; repeat for more.")
@click.option("--workdir", default=None, metavar="W", help="Folder holding the versioned cycle state.")
@config_options(CycleConfig)
@runner_options
@config_file_option
@json_option
def cycle_command(seed: tuple[str, ...], pool: tuple[str, ...], workdir: str | None, config_file: str | None,
                  as_json: bool, **kwargs: Any) -> None:
    """The DeepSeekMath recall loop: train, recall, find math domains, expand the seed, repeat.

    Each cycle trains one model per pool source, scores the pool, and writes statistics
    (recalled documents, score histogram, overlap with the previous cycle, held-out seed
    recall) and expansion candidates (URL prefixes of math domains) to W/cycle-NNN/. Without
    --auto-accept the loop pauses until you review W/cycle-NNN/candidates.yaml; rerun the
    same command to go on. A killed run resumes where it stopped.

    \b
    Example:
      mathcorpus recall cycle --seed seed.jsonl.gz --pool pool/ --workdir runs/recall --cycles 4
      mathcorpus recall cycle --seed seed.jsonl.gz --pool pool/ --workdir runs/recall --auto-accept \\
          --train dim=64,bucket=200000
    """
    from recall.cycle import run_cycle

    opts = run_options_from_kwargs(kwargs, config_file)
    overrides = dict(kwargs)
    overrides.update({"seed": list(seed) or None, "pool": list(pool) or None, "workdir": workdir})
    cfg = resolve(CycleConfig, config_file, overrides, section=CycleConfig.section)
    summary = run_cycle(cfg, opts, log=lambda m: click.echo(m, err=True))

    def human(s: dict[str, Any]) -> None:
        for c in s["cycles"]:
            if c["recalled"] is None:
                continue
            rbs = ", ".join(f"{k} {v:,}" for k, v in (c["recalled_by_source"] or {}).items())
            ov = c["overlap_previous"]
            click.echo(f"cycle {c['cycle']}: recalled {c['recalled']:,} ({rbs}); new {c['new']:,} "
                       f"({c['new_share']:.1%}); kept from previous cycle "
                       f"{'-' if ov is None else f'{ov:.1%}'}; held-out seed recall "
                       f"{_fmt((c['heldout_seed_recall'] or {}).get('all'), 3)}; candidates "
                       f"{_fmt(c['candidates'])}, accepted {_fmt(c['accepted'])}")
        if s["status"] == "awaiting_review":
            click.echo(f"waiting for review: edit {s['review_file']} (accept: true on math prefixes, then "
                       "reviewed: true) and rerun the same command")
        else:
            click.echo(f"status: {s['status']} ({s['stop_reason']}); score a pool with the latest models: "
                       f"mathcorpus recall score POOL -o OUT --config {s['score_config']}")

    emit(summary, as_json, human)
