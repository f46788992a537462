"""Tokenizers for export: HF ``tokenizers`` and a verified ``tiktoken`` fast path.

Owns resolving ``--tokenizer`` (a ``tokenizer.json`` file, a folder holding one, or a
bundled name such as ``qwen2.5``), choosing the EOS token, and turning a list of texts into
one flat token array with EOS appended to every document.

Two engines give the same ids:

* ``hf``: HF ``tokenizers`` batch encoding, the reference.
* ``tiktoken``: for byte-level BPE tokenizers (Qwen2.5, GPT-2 style) a ``tiktoken.Encoding``
  is built from the same vocab (as byte ranks), the same pre-tokenizer regex and the same
  NFC normalizer. It is several times faster per core. It is used only when the tokenizer's
  structure allows it *and* it reproduces the HF ids exactly on a probe set plus a sample of
  the input (:func:`choose_engine`); otherwise export falls back to ``hf``. The engine used
  is recorded in the manifest.

Special-token strings inside document text are plain text. That covers every added token,
special or not (``<|endoftext|>``, ``<|im_start|>``, and Qwen's non-special ``<tool_call>``
and ``<|fim_prefix|>``, which HF would otherwise match even with ``encode_special_tokens``):
they are tokenized by the BPE model like any other characters and never become control
tokens (HF: text is encoded by a copy of the tokenizer without its added tokens; tiktoken:
ordinary encoding). So the EOS id appears only where export appends it, at the end of each
document, and a document that quotes a chat template cannot inject fake boundaries.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from corpus.errors import ConfigError
from corpus.shards import file_sha256

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "data" / "tokenizers"
DEFAULT_TOKENIZER = "qwen2.5"
# Document separators tried, in order, when --eos is not given. Pretraining wants the
# end-of-document token, not a chat turn end (Qwen's tokenizer_config says <|im_end|>).
EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>")
# GPT-2's pre-tokenizer, used by ByteLevel(use_regex=True).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENGINES = ("auto", "tiktoken", "hf")

# Texts that exercise the corners where two tokenizer implementations could disagree:
# normalization, unusual whitespace, newlines, digits, contractions, scripts, special-token
# strings used as text. Always part of the identity check, on top of the input sample.
PROBES: tuple[str, ...] = (
    "Hello world", "a<|endoftext|>b<|im_start|>user\nhi<|im_end|>", "<|endoftext|>",
    "e\u0301 cafe\u0301 \u1100\u1161\u11a8 a\u030a\u0301 \u2126 \u212b", "line1\r\nline2\n\n\n  x\r\r\n",
    "\t\ttab\u00a0nbsp\u3000ideographic\u2028ls\u0085nel\u2029ps \u200b\ufeff",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467 emoji \U0001f916\U0001f9ee",
    "12345678 3.14159 1e-10 \u0663\u0664\u0665",
    "don't I'LL we've THEY'RE 's 'd", "$$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$ \\begin{align*} a &= b \\\\ \\end{align*}",
    "\u5c0f\u660e\u6709 3 \u4e2a\u82f9\u679c\uff0c\u53c8\u4e70\u4e86 5 \u4e2a\u3002\u7b54\uff1a8",
    "  leading and trailing  ", "\n", " ", "   \n\n\t ", "x" * 3000, "ABC" + "\u0300" * 20,
    "\ufb01 ligature \u216b \u2460 \u01c4\u01c5\u01c6 \u0130stanbul \u00df \u1e9e", "\x00\x01\x7f control",
    "\u0958 \u09dc \u0f43 \U0001d400", "def f(x):\n    return x**2  # square\n\n\tpass",
    "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd \u043f\u0440\u0438\u0432\u0435\u0442 "
    "\u3053\u3093\u306b\u3061\u306f",
)


# ----------------------------------------------------------------------------- resolving
@dataclass(frozen=True)
class TokenizerRef:
    """Where a tokenizer came from: what the user named, the tokenizer.json file, its hash."""

    name: str
    path: str
    sha256: str


def bundled_tokenizers() -> list[str]:
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "tokenizer.json").is_file())




def resolve_tokenizer(name_or_path: str | None) -> TokenizerRef:
    """Find the tokenizer.json for ``--tokenizer``; ConfigError naming the fix when absent."""
    name = name_or_path or DEFAULT_TOKENIZER
    p = Path(os.path.expanduser(name))
    path: Path | None = None
    if p.is_file():
        path = p
    elif p.is_dir():
        if not (p / "tokenizer.json").is_file():
            raise ConfigError(f"tokenizer folder '{name}' has no tokenizer.json; export needs the HF tokenizers "
                              "file (save it with tokenizer.save('tokenizer.json') or "
                              "AutoTokenizer.save_pretrained)")
        path = p / "tokenizer.json"
    elif name in bundled_tokenizers():
        path = BUNDLED_DIR / name / "tokenizer.json"
    else:
        bundled = ", ".join(bundled_tokenizers()) or "none"
        raise ConfigError(f"tokenizer '{name}' not found: it is not a tokenizer.json file, a folder holding "
                          f"tokenizer.json, or a bundled name ({bundled}). Pass --tokenizer with the path to a "
                          "tokenizer.json (or its folder); download hub tokenizers first, e.g. "
                          "huggingface-cli download Qwen/Qwen2.5-Math-7B tokenizer.json")
    return TokenizerRef(name=name, path=str(path.resolve()), sha256=file_sha256(str(path)))


# ----------------------------------------------------------------------------- loading
@dataclass(eq=False)  # hashed by identity: the per-process caches key on it
class LoadedTokenizer:
    """A tokenizer.json with what export needs; the HF objects are built on first use.

    ``text`` is the HF tokenizer without its added tokens or post-processor: it encodes
    document text (see module doc). ``hf`` is the complete one (ids of added tokens, decoding).
    A task that runs the tiktoken engine never builds either.
    """

    ref: TokenizerRef
    raw: str
    spec: dict[str, Any]
    vocab_size: int
    eos_token: str
    eos_id: int

    @functools.cached_property
    def hf(self) -> Any:
        return self._build(self.raw)

    @functools.cached_property
    def text(self) -> Any:
        from tokenizers import Tokenizer

        # Added-token strings in documents are text, never control tokens (see module doc):
        # the same model, normalizer and pre-tokenizer, without the added tokens.
        full = self.hf
        text = Tokenizer(full.model)
        text.normalizer = full.normalizer
        text.pre_tokenizer = full.pre_tokenizer
        text.decoder = full.decoder
        return text

    def _build(self, raw: str) -> Any:
        from tokenizers import Tokenizer

        try:
            return Tokenizer.from_str(raw)
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception on a bad file
            raise ConfigError(f"{self.ref.path}: cannot load it as an HF tokenizers file ({exc}); pass a "
                              "tokenizer.json written by tokenizers/transformers") from exc

    def describe(self) -> dict[str, Any]:
        return {"name": self.ref.name, "path": self.ref.path, "sha256": self.ref.sha256,
                "vocab_size": self.vocab_size, "eos_token": self.eos_token, "eos_id": self.eos_id,
                "special_tokens_in_text": "plain text"}


def load_tokenizer(ref: TokenizerRef, eos: str | None = None) -> LoadedTokenizer:
    """Load ``ref``; pick the EOS token (``eos``, else the first known candidate).

    Cached per process (keyed by the file hash), so tasks run one after another in one
    worker load it once.
    """
    return _load_tokenizer(ref, eos)


def _token_ids(spec: dict[str, Any]) -> dict[str, int]:
    """Every token string -> id: the model vocab plus the added tokens."""
    vocab = (spec.get("model") or {}).get("vocab") or {}
    ids = dict(vocab) if isinstance(vocab, dict) else {t: i for i, (t, _) in enumerate(vocab)}  # Unigram: list
    for a in spec.get("added_tokens", []):
        ids[a["content"]] = int(a["id"])
    return ids


@functools.lru_cache(maxsize=4)
def _load_tokenizer(ref: TokenizerRef, eos: str | None) -> LoadedTokenizer:
    try:
        raw = Path(ref.path).read_text(encoding="utf-8")
        spec = json.loads(raw)
        if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
            raise ValueError("no 'model' section")
        ids = _token_ids(spec)
        if not ids:
            raise ValueError("empty vocabulary")
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"{ref.path}: cannot load it as an HF tokenizers file ({exc}); pass a tokenizer.json "
                          "written by tokenizers/transformers") from exc
    # ids run from 0 to vocab_size - 1: what the token dtype must hold
    tok = LoadedTokenizer(ref=ref, raw=raw, spec=spec, vocab_size=max(ids.values()) + 1, eos_token="", eos_id=-1)
    if eos is not None:
        if eos not in ids:
            raise ConfigError(f"--eos '{eos}' is not a token of {ref.name} ({ref.path}); pass a token that exists, "
                              f"e.g. {_eos_hint(spec)}")
        tok.eos_token, tok.eos_id = eos, ids[eos]
        return tok
    for cand in EOS_CANDIDATES:
        if cand in ids:
            tok.eos_token, tok.eos_id = cand, ids[cand]
            return tok
    cfg = Path(ref.path).with_name("tokenizer_config.json")
    if cfg.is_file():
        try:
            c = json.loads(cfg.read_text(encoding="utf-8")).get("eos_token")
        except ValueError:
            c = None
        c = c.get("content") if isinstance(c, dict) else c
        if isinstance(c, str) and c in ids:
            tok.eos_token, tok.eos_id = c, ids[c]
            return tok
    raise ConfigError(f"{ref.name}: no end-of-document token found (tried {', '.join(EOS_CANDIDATES)} and "
                      "tokenizer_config.json's eos_token); pass --eos TOKEN")


def _eos_hint(spec: dict[str, Any]) -> str:
    added = [a["content"] for a in spec.get("added_tokens", [])][:3]
    return ", ".join(added) or "</s>"


# ----------------------------------------------------------------------------- engines
class Engine(Protocol):
    name: str

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without EOS."""


class HFEngine:
    """HF tokenizers batch encoding (the reference engine)."""

    name = "hf"

    def __init__(self, tok: LoadedTokenizer) -> None:
        self.tok = tok.text

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]


class TiktokenEngine:
    """tiktoken ordinary encoding after NFC (when the tokenizer's normalizer is NFC)."""

    name = "tiktoken"

    def __init__(self, encoding: Any, nfc: bool, threads: int = 1) -> None:
        self.encoding = encoding
        self.nfc = nfc
        self.threads = max(1, threads)

    def encode(self, texts: list[str]) -> list[list[int]]:
        if self.nfc:
            # normalize() has a quick check inside: ASCII and already-NFC text costs almost nothing
            texts = [unicodedata.normalize("NFC", t) for t in texts]
        if self.threads > 1 and len(texts) > 1:
            return self.encoding.encode_ordinary_batch(texts, num_threads=self.threads)
        enc = self.encoding.encode_ordinary
        return [enc(t) for t in texts]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _normalizer_is_nfc(norm: Any) -> bool | None:
    """True for NFC, False for no normalizer, None for anything tiktoken cannot reproduce."""
    if norm is None:
        return False
    if norm.get("type") == "NFC":
        return True
    if norm.get("type") == "Sequence":
        parts = [_normalizer_is_nfc(n) for n in norm.get("normalizers", [])]
        if any(p is None for p in parts) or sum(bool(p) for p in parts) > 1:
            return None
        return any(parts)
    return None


def _pretokenizer_pattern(pre: Any) -> str | None:
    """The split regex when the pre-tokenizer is byte-level BPE's (else None)."""
    if pre is None:
        return None
    if pre.get("type") == "ByteLevel":
        if pre.get("add_prefix_space") or not pre.get("use_regex", True):
            return None
        return GPT2_PATTERN
    if pre.get("type") == "Sequence":
        parts = pre.get("pretokenizers", [])
        if len(parts) == 1:
            return _pretokenizer_pattern(parts[0])
        if len(parts) != 2:
            return None
        split, bl = parts
        if (split.get("type") != "Split" or split.get("behavior") != "Isolated" or split.get("invert")
                or "Regex" not in (split.get("pattern") or {})):
            return None
        if bl.get("type") != "ByteLevel" or bl.get("add_prefix_space") or bl.get("use_regex", True):
            return None
        return str(split["pattern"]["Regex"])
    return None


def build_tiktoken(tok: LoadedTokenizer) -> tuple[Any | None, bool, str]:
    """(tiktoken Encoding, apply NFC first, "ok") or (None, False, why not); cached per process."""
    return _build_tiktoken(tok.ref, tok)


@functools.lru_cache(maxsize=4)
def _build_tiktoken(ref: TokenizerRef, tok: LoadedTokenizer) -> tuple[Any | None, bool, str]:
    """A tiktoken Encoding equivalent to ``tok`` by construction, or (None, _, why not).

    Structural conditions: byte-level BPE with no dropout/prefix/suffix/byte fallback; an NFC
    or no normalizer; a byte-level pre-tokenizer regex; every vocab entry a single byte or the result of
    a merge; and merge results numbered in merge order, so that "lowest rank first" (tiktoken)
    and "earliest merge first" (HF) pick the same pair. Identity on real text is then checked
    by :func:`verify_identity`.
    """
    spec = tok.spec
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return None, False, f"model type {model.get('type')!r} is not BPE"
    if model.get("dropout") or model.get("byte_fallback") or model.get("continuing_subword_prefix") \
            or model.get("end_of_word_suffix"):
        return None, False, "BPE options (dropout, byte fallback, subword prefix/suffix) tiktoken lacks"
    nfc = _normalizer_is_nfc(spec.get("normalizer"))
    if nfc is None:
        return None, False, f"normalizer {json.dumps(spec.get('normalizer'))[:80]} is not NFC"
    pattern = _pretokenizer_pattern(spec.get("pre_tokenizer"))
    if pattern is None:
        return None, False, "pre-tokenizer is not byte-level BPE's regex split"
    # str.translate maps each byte-level character to the latin-1 character of its byte; any
    # other character becomes U+FFFF, which latin-1 cannot encode, so it cannot slip through
    to_bytes: dict[int, str] = {o: "\uffff" for o in range(256)}
    to_bytes.update({ord(c): chr(b) for b, c in _bytes_to_unicode().items()})
    vocab: dict[str, int] = model.get("vocab") or {}
    # added tokens that also sit in the model vocab (GPT-2's <|endoftext|>) are never produced
    # from text under our policy, so they are no BPE ranks
    added = {int(a["id"]) for a in spec.get("added_tokens", [])}
    try:
        ranks = {t.translate(to_bytes).encode("latin-1"): int(i) for t, i in vocab.items() if int(i) not in added}
    except UnicodeEncodeError:
        return None, False, "vocab holds tokens outside the byte-level alphabet"
    if len(ranks) != len(vocab) - len(added & set(vocab.values())):
        return None, False, "vocab holds tokens that map to the same bytes"
    if sum(1 for b in ranks if len(b) == 1) != 256:
        return None, False, "vocab lacks some of the 256 single-byte tokens"
    merges = model.get("merges") or []
    pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in merges]
    results = [vocab.get(a + b, -1) for a, b in pairs]
    rid = np.array(results, dtype=np.int64)
    if (rid < 0).any() or (rid.size > 1 and (np.diff(rid) <= 0).any()):
        return None, False, "merge results are not numbered in merge order"
    if rid.size + 256 != len(ranks):
        return None, False, "some vocab entries are not produced by any merge"
    import tiktoken

    try:
        enc = tiktoken.Encoding(name=f"mathcorpus:{tok.ref.sha256[:12]}", pat_str=pattern, mergeable_ranks=ranks,
                                special_tokens={})
    except ValueError as exc:  # the Rust regex compiler rejects a pattern
        return None, False, f"tiktoken cannot compile the pre-tokenizer regex ({exc})"
    return enc, bool(nfc), "ok"


# ----------------------------------------------------------------------------- identity
@dataclass
class IdentityReport:
    """Result of comparing two engines on the same texts."""

    identical: bool
    docs: int
    tokens: int
    mismatch: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"identical": self.identical, "docs": self.docs, "tokens": self.tokens}
        if self.mismatch:
            d["first_mismatch"] = self.mismatch
        return d


def verify_identity(reference: Engine, candidate: Engine, texts: Sequence[str]) -> IdentityReport:
    texts = list(texts)
    a = reference.encode(texts)
    b = candidate.encode(texts)
    tokens = sum(len(x) for x in a)
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            k = next((j for j, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
            return IdentityReport(False, len(texts), tokens, {
                "doc": i, "token": k, "text_start": texts[i][:80],
                reference.name: x[k:k + 8], candidate.name: y[k:k + 8]})
    return IdentityReport(True, len(texts), tokens)


@dataclass
class EngineChoice:
    """The engine decision, made once (driver) and shipped to tasks as plain data."""

    engine: str
    reason: str
    check: dict[str, Any] = field(default_factory=dict)


def choose_engine(tok: LoadedTokenizer, requested: str, sample: Sequence[str]) -> EngineChoice:
    """``auto``: tiktoken if it is structurally possible and identical on PROBES + ``sample``."""
    if requested not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {requested!r}")
    if requested == "hf":
        return EngineChoice("hf", "requested")
    enc, nfc, why = build_tiktoken(tok)
    if enc is None:
        if requested == "tiktoken":
            raise ConfigError(f"--engine tiktoken cannot reproduce tokenizer {tok.ref.name}: {why}; use --engine hf "
                              "or auto")
        return EngineChoice("hf", f"tiktoken not applicable: {why}")
    report = verify_identity(HFEngine(tok), TiktokenEngine(enc, nfc), list(PROBES) + list(sample))
    if not report.identical:
        if requested == "tiktoken":
            raise ConfigError(f"--engine tiktoken gives different ids from HF tokenizers on the identity sample "
                              f"({report.mismatch}); use --engine hf or auto")
        return EngineChoice("hf", "tiktoken ids differ from HF tokenizers on the identity sample", report.to_dict())
    return EngineChoice("tiktoken", "identical to HF tokenizers on the identity sample", report.to_dict())


def make_engine(tok: LoadedTokenizer, engine: str, threads: int = 1) -> Engine:
    """Build the engine chosen by :func:`choose_engine` (in a task process)."""
    if engine == "tiktoken":
        enc, nfc, why = build_tiktoken(tok)
        if enc is None:
            raise ConfigError(f"tiktoken engine unavailable for {tok.ref.name}: {why}")
        return TiktokenEngine(enc, nfc, threads)
    return HFEngine(tok)


# ----------------------------------------------------------------------------- batches
# Sub-batches keep Python's list-of-int results small (an int object is ~32 bytes).
CHUNK_CHARS = 1 << 20
CHUNK_DOCS = 2048


def encode_documents(engine: Engine, texts: Sequence[str], eos_id: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize ``texts`` and append EOS to each: (flat tokens of ``dtype``, per-doc lengths int64)."""
    flats: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    start = 0
    n = len(texts)
    while start < n:
        end = start
        chars = 0
        while end < n and (end == start or (chars < CHUNK_CHARS and end - start < CHUNK_DOCS)):
            chars += len(texts[end])
            end += 1
        ids = engine.encode(list(texts[start:end]))
        for x in ids:
            x.append(eos_id)  # in place: cheaper than building new lists
        lens = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        total = int(lens.sum())
        flats.append(np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=total))
        lengths.append(lens)
        start = end
    if not flats:
        return np.zeros(0, dtype=dtype), np.zeros(0, dtype=np.int64)
    return (np.concatenate(flats) if len(flats) > 1 else flats[0],
            np.concatenate(lengths) if len(lengths) > 1 else lengths[0])


def decode(tok: LoadedTokenizer, ids: Sequence[int] | np.ndarray) -> str:
    """Text of ``ids`` (special tokens kept), for round-trip checks and inspection."""
    return tok.hf.decode([int(i) for i in ids], skip_special_tokens=False)
