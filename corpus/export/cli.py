"""``mathcorpus export``: tokenize, mix, shuffle and pack documents into trainer-ready shards."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from corpus.cli import (
    config_file_option,
    emit,
    inputs_argument,
    json_option,
    output_option,
    run_options_from_kwargs,
    runner_options,
    summary_line,
)
from corpus.config import config_options, resolve
from corpus.errors import InputError
from corpus.export.stage import MANIFEST, ExportConfig, ExportStage
from corpus.runner import run_stage


class ExportGroup(click.Group):
    """``export INPUT... -o OUT`` runs the export; ``export blend ...`` (a subcommand) is routed first.

    The export itself is the group's own callback (``invoke_without_command``): its
    ``INPUT...`` argument takes every remaining word, so subcommands are picked here, by name,
    before click parses the export's options.
    """

    allow_interspersed_args = True  # options may follow INPUT..., as for any command

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        if args and args[0] in self.commands and not os.path.exists(args[0]):
            # a bare parent context, so usage reads "mathcorpus export blend", not "export INPUT... blend"
            outer = click.Context(click.Command(info_name), info_name=info_name, parent=parent)
            return self.commands[args[0]].make_context(args[0], list(args[1:]), parent=outer, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)


@click.group("export", cls=ExportGroup, invoke_without_command=True, no_args_is_help=False)
@inputs_argument
@output_option
@config_options(ExportConfig)
@config_file_option
@runner_options
@json_option
def export_command(inputs: tuple[str, ...], output: str, config_file: str | None, as_json: bool,
                   **kwargs: Any) -> None:
    """Tokenize documents (EOS after each), mix by source, shuffle globally, and write token shards.

    \b
    Formats: megatron (.bin/.idx, Megatron-LM), nanotron (datatrove .ds/.ds.index),
    numpy (nanoGPT .bin + .json sidecar; --packed for seq-len rows), parquet (input_ids rows).
    --sft exports chat conversations (messages, or --prompt-field/--response-field) with the
    chat template applied, a loss mask on assistant tokens, packed without splitting one.
    Trainers read any export with corpus.export.loader.TokenDataset; `export blend` prints
    Megatron-LM's --data-path for an export.
    OUTPUT/manifest.json records counts per source before/after the mix, the tokenizer hash,
    engine, vocab size and EOS id, the seed and the inputs; OUTPUT/documents.parquet records
    where every document went (the shuffle). Special-token strings in text stay plain text.

    \b
    Example:
      mathcorpus export clean/ -o tokens/ --format megatron --seed 1 \\
          --mix web=1.0,book=2.0,code=1.0,synth=1.5 --workers 4
      mathcorpus export clean/ -o packed/ --format parquet --seq-len 4096 --no-split
      mathcorpus export synth_out/ -o sft/ --sft --format parquet --seq-len 4096 \\
          --prompt-field metadata.problem --response-field metadata.solution
    """
    opts = run_options_from_kwargs(kwargs, config_file)
    cfg = resolve(ExportConfig, config_file, kwargs, section=ExportConfig.section)
    stage = ExportStage(cfg)
    tok = stage.check()  # tokenizer and dtype errors before anything is written
    if cfg.sft:
        from corpus.export.sft import export_sft

        summary = export_sft(cfg, tok, list(inputs), output, overwrite=opts.overwrite, batch_rows=opts.batch_rows)
    else:
        summary = run_stage(stage, list(inputs), output, opts)
    mpath = os.path.join(output, MANIFEST)
    manifest: dict[str, Any] = {}
    if os.path.exists(mpath):
        with open(mpath, encoding="utf-8") as fh:
            manifest = json.load(fh)
    result = {"summary": summary, "manifest": manifest}

    def human(r: dict[str, Any]) -> None:
        click.echo(summary_line(r["summary"]))
        m = r["manifest"]
        if not m:
            return
        out = m["output"]
        click.echo(f"export: {out['documents']:,} documents, {out['tokens']:,} tokens in {out['shards']} "
                   f"{m['format']} shard(s) ({m['dtype']}, {out['sequences']:,} sequences, "
                   f"{out['padding_tokens']:,} padding); engine {m['tokenizer']['engine']}; "
                   f"manifest {mpath}")
        if m.get("sft"):
            sft = m["sft"]
            click.echo(f"  sft: {sft['conversations']:,} conversations, {sft['trained_tokens']:,} trained tokens, "
                       f"{sft['truncated']:,} truncated; template {sft['template']['name']}")
        for name, s in m.get("sources", {}).items():
            b, a = s["before"], s["after"]
            click.echo(f"  {name}: weight {s['weight']:g}: {b['documents']:,} docs / {b['tokens']:,} tokens -> "
                       f"{a['documents']:,} docs / {a['tokens']:,} tokens")

    emit(result, as_json, human)


def blend_pairs(folders: list[str]) -> list[tuple[float, str]]:
    """(weight, prefix) per Megatron shard of each ``OUT[:WEIGHT]``: shard tokens x folder weight / folder tokens."""
    pairs: list[tuple[float, str]] = []
    for spec in folders:
        folder, weight = spec, 1.0
        head, sep, tail = spec.rpartition(":")
        if sep and head:
            try:
                folder, weight = head, float(tail)
            except ValueError:
                folder, weight = spec, 1.0
        mpath = os.path.join(folder, MANIFEST)
        if not os.path.exists(mpath):
            raise InputError(f"{folder}: no manifest.json; pass folders written by mathcorpus export --format megatron")
        with open(mpath, encoding="utf-8") as fh:
            m = json.load(fh)
        if m.get("format") != "megatron":
            raise InputError(f"{folder}: a {m.get('format')} export; Megatron-LM's --data-path takes --format megatron "
                             "exports (read the others with TokenDataset)")
        if weight < 0 or weight != weight:
            raise InputError(f"{spec}: the weight after ':' must be a number >= 0")
        total = sum(int(s["tokens"]) for s in m["shards"]) or 1
        for s in m["shards"]:
            prefix = os.path.join(os.path.abspath(folder), s["files"][0][:-len(".bin")])
            pairs.append((weight * int(s["tokens"]) / total, prefix))
    return pairs


@export_command.command("blend")
@click.argument("folders", nargs=-1, required=True, metavar="OUT[:WEIGHT]...")
@json_option
def blend_command(folders: tuple[str, ...], as_json: bool) -> None:
    """Print Megatron-LM's --data-path (weight prefix pairs) for megatron exports.

    \b
    Each shard's weight is its share of its export's tokens, times the export's weight
    (default 1), so Megatron samples every token of an export equally often. The source mix
    (--mix) is already applied inside the shards; weigh whole exports with OUT:WEIGHT.

    \b
    Example:
      mathcorpus export blend tokens/
      mathcorpus export blend web_tokens/:0.7 book_tokens/:0.3 --json
    """
    pairs = blend_pairs(list(folders))
    emit({"data_path": [x for w, p in pairs for x in (f"{w:.10g}", p)]}, as_json,
         lambda r: click.echo(" ".join(r["data_path"])))
