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
from corpus.export.stage import MANIFEST, ExportConfig, ExportStage
from corpus.runner import run_stage


@click.command("export")
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
    OUTPUT/manifest.json records counts per source before/after the mix, the tokenizer hash,
    engine, vocab size and EOS id, the seed and the inputs; OUTPUT/documents.parquet records
    where every document went (the shuffle). Special-token strings in text stay plain text.

    \b
    Example:
      mathcorpus export clean/ -o tokens/ --format megatron --seed 1 \\
          --mix web=1.0,book=2.0,code=1.0,synth=1.5 --workers 4
      mathcorpus export clean/ -o packed/ --format parquet --seq-len 4096 --no-split
    """
    opts = run_options_from_kwargs(kwargs, config_file)
    cfg = resolve(ExportConfig, config_file, kwargs, section=ExportConfig.section)
    stage = ExportStage(cfg)
    stage.check()  # tokenizer and dtype errors before anything is written
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
        for name, s in m["sources"].items():
            b, a = s["before"], s["after"]
            click.echo(f"  {name}: weight {s['weight']:g}: {b['documents']:,} docs / {b['tokens']:,} tokens -> "
                       f"{a['documents']:,} docs / {a['tokens']:,} tokens")

    emit(result, as_json, human)
