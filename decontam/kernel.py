"""One-pass n-gram kernel over the UTF-8 bytes of a whole Arrow batch (numba), and its reference.

Owns the hot path of decontamination: it reads the ``offsets`` and ``data`` buffers of a
string column directly (no Python object per document), and in one pass per row

1. decodes UTF-8 and maps each code point through a table that applies the rules of
   :mod:`corpus.textnorm` character by character (NFKC + lowercase, punctuation and symbols
   as separators, CJK characters as single tokens, full-width forms folded);
2. recognizes LaTeX commands after a backslash (``\\left`` dropped, ``\\dfrac`` → ``frac``);
3. hashes each token (FNV-1a 64 over the token's normalized UTF-8, then a splitmix64
   finalizer);
4. keeps an O(1) rolling polynomial hash of the last ``n`` tokens (and of the last
   ``phrase_n`` tokens, for items too short for an ``n``-gram), buffers the gram keys and
   probes them in batches against a one-bit-per-slot bitmap prefilter, then looks a
   prefilter hit up in the exact sorted key array through a bucket directory.

Characters whose normalization depends on context (combining marks, Hangul jamo, Greek
capital sigma, ligatures that expand, code points unassigned in Python's Unicode database)
cannot be handled one at a time. A row holding one is flagged instead of scanned; the
caller normalizes it (``pyarrow.compute.utf8_normalize`` first, then
``corpus.textnorm.normalize_text`` for what is left) and scans it again in "normalized"
mode. Rows with figure code (``[asy]``, ``\\begin{tikzpicture}``) are flagged too and
stripped with ``corpus.textnorm.strip_figure_code`` first. So the kernel's tokens always
equal ``corpus.textnorm.tokenize`` of the (stripped) text (tested, also on random Unicode).

:func:`reference_token_hashes` / :func:`reference_gram_keys` / :func:`reference_scan` are the
pure-Python reference of the same function, built on ``corpus.textnorm.tokenize``; the
tests check that kernel and reference give identical token and gram hashes.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from corpus.textnorm import (CJK_RANGES, LATEX_DROP, LATEX_RENAME, figure_spans, is_cjk, normalize_text,
                             strip_figure_code, tokenize)

# -- character classes of the table ---------------------------------------------------
CLS_SEP = 0      # separator: punctuation, symbols, spaces (dropped)
CLS_WORD = 1     # part of a word; cmap gives the normalized code point
CLS_CJK = 2      # a token on its own; cmap gives the normalized code point
CLS_BSL = 3      # a backslash: may start a LaTeX command
CLS_SOFT = 4     # needs whole-string NFKC (pyarrow can do it), then a rescan
CLS_HARD = 5     # needs corpus.textnorm.normalize_text in Python
TABLE_SIZE = 0x40000  # planes 0-3; code points above are HARD (tags, variation selectors)

# -- row modes ------------------------------------------------------------------------
MODE_RAW = 0     # original text: apply the table
MODE_NORM = 1    # text already normalized by normalize_text: spaces separate, CJK alone
MODE_SKIP = 2    # do not scan (empty output)

# -- row flags returned by the kernel -------------------------------------------------
FLAG_OK = 0
FLAG_SOFT = 1
FLAG_HARD = 2
FLAG_FIGURE = 3  # the row holds figure code ([asy], \begin{asy}, \begin{tikzpicture}): strip first

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
GRAM_BASE = 0x9E3779B97F4A7C15  # odd multiplier of the rolling polynomial hash
MASK64 = (1 << 64) - 1
MAX_N = 64  # ring buffer size: the largest supported n-gram length
PROBE_BATCH = 256  # gram keys buffered before their bitmap probes


# ----------------------------------------------------------------------------- tables
def _fnv_bytes(data: bytes) -> int:
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK64
    return h


def _mix_py(z: int) -> int:
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


_WORDCHAR_RE = re.compile(r"[^\W_]")


def _composition_seconds() -> set[int]:
    """Code points NFC can merge into the character before them (they are never safe alone)."""
    seconds: set[int] = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))  # Hangul V, T
    for cp in range(TABLE_SIZE):
        d = unicodedata.decomposition(chr(cp))
        if d and not d.startswith("<"):
            parts = d.split()
            if len(parts) == 2:
                seconds.add(int(parts[1], 16))
    return seconds


_TABLE_VERSION = 1  # bump when the rules of _build_tables change


def _table_cache_path() -> str:
    import hashlib
    import os

    key = repr((_TABLE_VERSION, unicodedata.unidata_version, pa.__version__, CJK_RANGES, TABLE_SIZE))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = os.environ.get("MATHCORPUS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "mathcorpus")
    return os.path.join(root, f"chartable-{digest}.npz")


@lru_cache(maxsize=1)
def char_tables() -> tuple[np.ndarray, np.ndarray]:
    """``(cls, cmap)``: class and normalized code point of every code point below TABLE_SIZE.

    Built from Python's ``unicodedata`` so it follows exactly what ``normalize_text`` does
    to a single character. Building takes about a second, so the result is cached on disk,
    keyed by the Unicode and pyarrow versions (``$MATHCORPUS_CACHE`` or ~/.cache/mathcorpus).
    """
    import os

    path = _table_cache_path()
    try:
        with np.load(path) as z:
            cls, cmap = z["cls"], z["cmap"]
        if cls.shape == (TABLE_SIZE,) and cmap.shape == (TABLE_SIZE,):
            return cls, cmap
    except (OSError, KeyError, ValueError):
        pass  # no cache yet (or unreadable): build it
    cls, cmap = _build_tables()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, cls=cls, cmap=cmap)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs the rebuild next time
    return cls, cmap


def _build_tables() -> tuple[np.ndarray, np.ndarray]:
    cls = np.full(TABLE_SIZE, CLS_HARD, dtype=np.uint8)
    cmap = np.zeros(TABLE_SIZE, dtype=np.int32)
    seconds = _composition_seconds()
    cps = [cp for cp in range(TABLE_SIZE) if not 0xD800 <= cp <= 0xDFFF]
    arrow_nfkc = pc.utf8_normalize(pa.array([chr(cp) for cp in cps]), "NFKC").to_pylist()

    def attaches(ch: str) -> bool:
        return bool(unicodedata.combining(ch)) or unicodedata.category(ch)[0] == "M" or ord(ch) in seconds

    for cp, an in zip(cps, arrow_nfkc):
        c = chr(cp)
        if cp < 128:
            if c.isalnum():
                cls[cp], cmap[cp] = CLS_WORD, ord(c.lower())
            elif c == "\\":
                cls[cp] = CLS_BSL
            else:
                cls[cp] = CLS_SEP
            continue
        if unicodedata.category(c) == "Cn":
            continue  # unassigned here; newer Unicode versions (and pyarrow) may disagree: HARD
        n = unicodedata.normalize("NFKC", c)
        if an != n or "\u03a3" in n:  # pyarrow disagrees, or lowercasing depends on context
            continue
        s = n.lower()
        if attaches(c) or any(attaches(ch) for ch in n):
            cls[cp] = CLS_SOFT
            continue
        if s == "\\":
            cls[cp] = CLS_BSL
        elif not _WORDCHAR_RE.search(s):
            cls[cp] = CLS_SOFT if "\\" in s else CLS_SEP
        elif len(s) == 1:
            t = ord(s)
            cls[cp], cmap[cp] = (CLS_CJK if is_cjk(t) else CLS_WORD), t
        else:
            # expands to several characters ("ﬁ" → "fi"): whole-string NFKC first, when it
            # changes the character at all; otherwise only Python's rules apply
            cls[cp] = CLS_SOFT if n != c else CLS_HARD
    return cls, cmap


_CJK_LO = np.array([lo for lo, _ in CJK_RANGES], dtype=np.int64)
_CJK_HI = np.array([hi for _, hi in CJK_RANGES], dtype=np.int64)


def _name_hashes(names: list[str]) -> np.ndarray:
    return np.array([_fnv_bytes(n.encode()) for n in names], dtype=np.uint64)


_DROP_HASHES = _name_hashes(list(LATEX_DROP))
_RENAME_FROM = _name_hashes(list(LATEX_RENAME))
_RENAME_TO = [LATEX_RENAME[k] for k in LATEX_RENAME]
if len(set(_RENAME_TO)) != 1 or _RENAME_TO[0] != "frac":
    raise RuntimeError("the kernel only implements renames to 'frac'; update kernel._scan")
_FRAC = np.frombuffer(b"frac", dtype=np.uint8).copy()
# what follows "[" or "\\" at the start of a figure block (see corpus.textnorm.figure_spans)
_FIG_ASY = np.frombuffer(b"asy]", dtype=np.uint8).copy()
_FIG_ENV1 = np.frombuffer(b"begin{asy}", dtype=np.uint8).copy()
_FIG_ENV2 = np.frombuffer(b"begin{tikzpicture}", dtype=np.uint8).copy()


# ----------------------------------------------------------------------------- numba
@njit(cache=True, inline="always")
def _mix(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def _fnv_cp(h: np.uint64, cp: np.int64) -> np.uint64:
    """Feed the UTF-8 encoding of code point ``cp`` into FNV-1a state ``h``."""
    p = np.uint64(FNV_PRIME)
    if cp < 0x80:
        h = (h ^ np.uint64(cp)) * p
    elif cp < 0x800:
        h = (h ^ np.uint64(0xC0 | (cp >> 6))) * p
        h = (h ^ np.uint64(0x80 | (cp & 0x3F))) * p
    elif cp < 0x10000:
        h = (h ^ np.uint64(0xE0 | (cp >> 12))) * p
        h = (h ^ np.uint64(0x80 | ((cp >> 6) & 0x3F))) * p
        h = (h ^ np.uint64(0x80 | (cp & 0x3F))) * p
    else:
        h = (h ^ np.uint64(0xF0 | (cp >> 18))) * p
        h = (h ^ np.uint64(0x80 | ((cp >> 12) & 0x3F))) * p
        h = (h ^ np.uint64(0x80 | ((cp >> 6) & 0x3F))) * p
        h = (h ^ np.uint64(0x80 | (cp & 0x3F))) * p
    return h


@njit(cache=True, inline="always")
def _decode(data: np.ndarray, i: np.int64) -> tuple[np.int64, np.int64]:
    """Code point at byte ``i`` and its length (Arrow guarantees valid UTF-8)."""
    b = np.int64(data[i])
    if b < 0x80:
        return b, 1
    if b < 0xE0:
        return ((b & 0x1F) << 6) | (np.int64(data[i + 1]) & 0x3F), 2
    if b < 0xF0:
        return (((b & 0x0F) << 12) | ((np.int64(data[i + 1]) & 0x3F) << 6)
                | (np.int64(data[i + 2]) & 0x3F)), 3
    return (((b & 0x07) << 18) | ((np.int64(data[i + 1]) & 0x3F) << 12)
            | ((np.int64(data[i + 2]) & 0x3F) << 6) | (np.int64(data[i + 3]) & 0x3F)), 4


@njit(cache=True, inline="always")
def _in_cjk(cp: np.int64, lo: np.ndarray, hi: np.ndarray) -> bool:
    for k in range(lo.shape[0]):
        if lo[k] <= cp <= hi[k]:
            return True
    return False


@njit(cache=True, inline="always")
def _dsearch(keys: np.ndarray, dirs: np.ndarray, dshift: np.uint64, key: np.uint64) -> np.int64:
    """Index of ``key`` in sorted ``keys`` via the bucket directory (about one key per bucket), or -1."""
    b = np.int64(key >> dshift)
    for j in range(dirs[b], dirs[b + 1]):
        if keys[j] == key:
            return j
    return -1


@njit(cache=True, nogil=True, inline="always")
def _ieq(data: np.ndarray, i: np.int64, end: np.int64, pat: np.ndarray) -> bool:
    """Whether the bytes at ``i`` equal lowercase ASCII ``pat``, ignoring ASCII case."""
    if i + pat.shape[0] > end:
        return False
    for k in range(pat.shape[0]):
        b = data[i + k]
        if 65 <= b <= 90:
            b += 32
        if b != pat[k]:
            return False
    return True


@njit(cache=True, nogil=True)
def _probe(buf, bpos, nb, bitmap, bshift, keys, dirs, dshift, kind, r, nh, h_row, h_pos, h_idx, h_kind):
    """Look up ``nb`` buffered gram keys; append hits. Returns the new hit count, or -1 on overflow.

    Keys are probed in a batch so the bitmap loads (random accesses into megabytes) are
    independent of each other and overlap in the memory system, instead of each token
    stalling on its own cache miss.
    """
    six = np.uint64(6)
    m63 = np.uint64(63)
    one = np.uint64(1)
    found = np.empty(nb, dtype=np.bool_)
    for q in range(nb):
        slot = buf[q] >> bshift
        found[q] = ((bitmap[slot >> six] >> (slot & m63)) & one) != 0
    cap = h_row.shape[0]
    for q in range(nb):
        if found[q]:
            ix = _dsearch(keys, dirs, dshift, buf[q])
            if ix >= 0:
                if nh >= cap:
                    return -1
                h_row[nh] = r
                h_pos[nh] = bpos[q]
                h_idx[nh] = ix
                h_kind[nh] = kind
                nh += 1
    return nh


@njit(cache=True, nogil=True)
def _scan(data, offsets, modes, cls, cmap, cjk_lo, cjk_hi, drop_h, rename_h, frac,
          n, bitmap, bshift, keys, dirs, dshift, pn, pbitmap, pbshift, pkeys, pdirs, pdshift,
          start_row, flags, ntok, h_row, h_pos, h_idx, h_kind,
          emit_tokens, t_hash, t_start, t_end, t_row, emit_grams, g_row, g_pos, g_key,
          detect_fig, fig_asy, fig_env1, fig_env2):
    """The kernel: scan rows from ``start_row`` on, writing into the preallocated outputs.

    Returns ``(next_row, n_hits, n_tokens, n_grams)``. It stops before a row whose hits
    would overflow ``h_*`` (``next_row`` < number of rows): the caller grows the arrays and
    calls again from there. Token and gram outputs are sized by the caller to never
    overflow (at most one token per character). Outputs are never reallocated here, which
    keeps reference counting out of the inner loop. ASCII words take a tight inner loop;
    everything else goes through the code point table.
    """
    nrows = offsets.shape[0] - 1
    nh = np.int64(0)
    nt = np.int64(0)
    ng = np.int64(0)
    ring = np.zeros(MAX_N, dtype=np.uint64)
    # one code point completes at most two tokens, so flushing at PROBE_BATCH - 2 never overflows
    kbuf = np.empty(PROBE_BATCH, dtype=np.uint64)
    kpos = np.empty(PROBE_BATCH, dtype=np.int64)
    pbuf = np.empty(PROBE_BATCH, dtype=np.uint64)
    ppos = np.empty(PROBE_BATCH, dtype=np.int64)
    pend_h = np.zeros(2, dtype=np.uint64)
    pend_s = np.zeros(2, dtype=np.int64)
    pend_e = np.zeros(2, dtype=np.int64)
    rmask = MAX_N - 1
    n_u = np.uint64(n)
    pn_u = np.uint64(pn)
    acls = np.empty(128, dtype=np.uint8)
    amap = np.empty(128, dtype=np.uint64)
    for q in range(128):
        acls[q] = cls[q]
        amap[q] = np.uint64(cmap[q])
    base = np.uint64(GRAM_BASE)
    fnv_p = np.uint64(FNV_PRIME)
    fnv_o = np.uint64(FNV_OFFSET)
    pow_n = np.uint64(1)
    for _ in range(n - 1):
        pow_n = pow_n * base
    pow_p = np.uint64(1)
    for _ in range(pn - 1):
        pow_p = pow_p * base
    use_grams = keys.shape[0] > 0
    use_phr = pn > 0 and pkeys.shape[0] > 0

    for r in range(start_row, nrows):
        mode = modes[r]
        if mode == MODE_SKIP:
            continue
        i = np.int64(offsets[r])
        end = np.int64(offsets[r + 1])
        nh0 = nh
        nt0 = nt
        ng0 = ng
        tok = np.int64(0)
        hg = np.uint64(0)
        hp = np.uint64(0)
        in_word = False
        wh = fnv_o
        wstart = np.int64(0)
        ch = np.int64(0)  # char index of the next code point
        aborted = False
        nk = 0
        npk = 0
        while True:
            at_end = i >= end
            cstart = ch
            c = CLS_SEP
            m = np.int64(0)
            if not at_end:
                b0 = data[i]
                if b0 < 0x80 and acls[b0] == CLS_WORD:
                    # ASCII letters and digits: the hot loop
                    if not in_word:
                        in_word = True
                        wh = fnv_o
                        wstart = ch
                    i0 = i
                    while True:
                        wh = (wh ^ amap[b0]) * fnv_p
                        i += 1
                        if i >= end:
                            break
                        b0 = data[i]
                        if b0 >= 0x80 or acls[b0] != CLS_WORD:
                            break
                    ch += i - i0  # one byte per char here
                    continue
                if b0 < 0x80:
                    cp = np.int64(b0)
                    i += 1
                    c = np.int64(acls[b0])
                    if detect_fig and (b0 == 91 and _ieq(data, i, end, fig_asy) or b0 == 92 and (
                            _ieq(data, i, end, fig_env1) or _ieq(data, i, end, fig_env2))):
                        flags[r] = FLAG_FIGURE  # "[asy]" or "\begin{asy}" / "\begin{tikzpicture}"
                        aborted = True
                        break
                else:
                    cp, ln = _decode(data, i)
                    i += ln
                    if cp < TABLE_SIZE:
                        c = np.int64(cls[cp])
                        m = np.int64(cmap[cp])
                    else:
                        c = CLS_HARD
                    if mode == MODE_NORM:
                        # normalized text: every non-ASCII char is a word char or a CJK token
                        c = CLS_CJK if _in_cjk(cp, cjk_lo, cjk_hi) else CLS_WORD
                        m = cp
                ch += 1
                if c >= CLS_SOFT:
                    fl = FLAG_SOFT if c == CLS_SOFT else FLAG_HARD
                    j = i
                    while fl == FLAG_SOFT and j < end:
                        # pyarrow's NFKC is only safe when no later character needs Python
                        # (its Unicode tables are newer than Python's for some code points)
                        if data[j] < 0x80:
                            j += 1
                            continue
                        cp2, ln2 = _decode(data, j)
                        j += ln2
                        if cp2 >= TABLE_SIZE or cls[cp2] == CLS_HARD:
                            fl = FLAG_HARD
                    flags[r] = fl
                    aborted = True
                    break
                if c == CLS_WORD:  # a non-ASCII letter or digit
                    if not in_word:
                        in_word = True
                        wh = fnv_o
                        wstart = cstart
                    wh = _fnv_cp(wh, m)
                    continue
            # -- tokens completed by this code point: the open word, then a CJK character
            npend = 0
            if in_word:
                in_word = False
                pend_h[0] = _mix(wh)
                pend_s[0] = wstart
                pend_e[0] = cstart
                npend = 1
            if c == CLS_CJK:
                pend_h[npend] = _mix(_fnv_cp(fnv_o, m))
                pend_s[npend] = cstart
                pend_e[npend] = ch
                npend += 1
            for q in range(npend):
                th = pend_h[q]
                if emit_tokens:
                    t_hash[nt] = th
                    t_start[nt] = pend_s[q]
                    t_end[nt] = pend_e[q]
                    t_row[nt] = r
                    nt += 1
                old = ring[(tok - n) & rmask] if tok >= n else np.uint64(0)
                hg = (hg - old * pow_n) * base + th
                if use_phr:
                    oldp = ring[(tok - pn) & rmask] if tok >= pn else np.uint64(0)
                    hp = (hp - oldp * pow_p) * base + th
                ring[tok & rmask] = th
                tok += 1
                if tok >= n:
                    key = _mix(hg + n_u)
                    if emit_grams:
                        g_row[ng] = r
                        g_pos[ng] = tok - n
                        g_key[ng] = key
                        ng += 1
                    if use_grams:
                        kbuf[nk] = key
                        kpos[nk] = tok - n
                        nk += 1
                if use_phr and tok >= pn:
                    pbuf[npk] = _mix(hp + pn_u)
                    ppos[npk] = tok - pn
                    npk += 1
            # -- probe the buffered keys in batches
            if nk >= PROBE_BATCH - 2 or (at_end and nk > 0):
                nh = _probe(kbuf, kpos, nk, bitmap, bshift, keys, dirs, dshift, 0, r, nh, h_row, h_pos, h_idx,
                            h_kind)
                nk = 0
                if nh < 0:
                    return r, nh0, nt0, ng0
            if npk >= PROBE_BATCH - 2 or (at_end and npk > 0):
                nh = _probe(pbuf, ppos, npk, pbitmap, pbshift, pkeys, pdirs, pdshift, 1, r, nh, h_row, h_pos,
                            h_idx, h_kind)
                npk = 0
                if nh < 0:
                    return r, nh0, nt0, ng0
            if at_end:
                break
            if c == CLS_BSL:
                # a LaTeX command: \left etc. are dropped, \dfrac and \tfrac start the word
                # "frac" (digits may follow: \dfrac12), any other name is left to become a word
                j = i
                name_h = fnv_o
                k = 0
                chj = ch
                while j < end:
                    cp2, ln2 = _decode(data, j)
                    if cp2 >= TABLE_SIZE:
                        break
                    m2 = cmap[cp2]
                    if cls[cp2] != CLS_WORD or m2 < 97 or m2 > 122:
                        break
                    name_h = (name_h ^ np.uint64(m2)) * fnv_p
                    k += 1
                    j += ln2
                    chj += 1
                if k > 0:
                    for q in range(drop_h.shape[0]):
                        if drop_h[q] == name_h:
                            i = j
                            ch = chj
                    for q in range(rename_h.shape[0]):
                        if rename_h[q] == name_h:
                            i = j
                            ch = chj
                            wh = fnv_o
                            for z in range(frac.shape[0]):
                                wh = (wh ^ np.uint64(frac[z])) * fnv_p
                            in_word = True
                            wstart = cstart
        if aborted:
            nh = nh0
            nt = nt0
            ng = ng0
            ntok[r] = 0
        else:
            ntok[r] = tok
    return nrows, nh, nt, ng



# ----------------------------------------------------------------------------- python side
@dataclass
class ScanResult:
    """Output of one scan over ``rows`` rows.

    ``hit_*``: one entry per gram (kind 0) or phrase-prefix (kind 1) found in the key set:
    the row, the token position where the gram starts, and the index into the sorted keys.
    ``tok_*`` / ``gram_*`` are filled only when asked for (tests, index building, confirm).
    ``ntok`` counts the tokens of each row.
    """

    ntok: np.ndarray
    hit_row: np.ndarray
    hit_pos: np.ndarray
    hit_idx: np.ndarray
    hit_kind: np.ndarray
    tok_hash: np.ndarray
    tok_start: np.ndarray
    tok_end: np.ndarray
    tok_row: np.ndarray
    gram_row: np.ndarray
    gram_pos: np.ndarray
    gram_key: np.ndarray
    fallback: np.ndarray  # rows fixed outside the kernel (figure code, NFKC, Python), sorted
    python_rows: int = 0  # how many of those were normalized by corpus.textnorm in Python
    figures: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # stripped figure spans
    renormalized: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # NFKC/Python rows


_EMPTY_U64 = np.zeros(0, dtype=np.uint64)
_EMPTY_BITMAP = np.zeros(1, dtype=np.uint64)
_EMPTY_DIRS = np.zeros(3, dtype=np.int32)


def make_bitmap(keys: np.ndarray, bits: int | None = None) -> tuple[np.ndarray, int]:
    """A one-bit-per-slot prefilter over ``keys`` (top bits of each key): ``(words, shift)``.

    About 32 slots per key keeps false positives near 3% while staying small (a 1.4 M key
    index gives an 8 MB bitmap); a false positive costs one binary search.
    """
    if bits is None:
        bits = max(12, int(np.ceil(np.log2(max(len(keys), 1) * 32))))
    bits = min(bits, 36)
    words = np.zeros(max(1, (1 << bits) // 64), dtype=np.uint64)
    shift = 64 - bits
    if len(keys):
        slots = keys >> np.uint64(shift)
        np.bitwise_or.at(words, (slots >> np.uint64(6)).astype(np.int64),
                         np.left_shift(np.uint64(1), slots & np.uint64(63)))
    return words, shift


@dataclass
class KeySet:
    """Sorted unique gram keys, their bitmap prefilter and bucket directory, as the kernel reads them.

    The directory maps the top ``64 - dshift`` bits of a key to the range of ``keys`` that
    start with them (about one key per bucket), so a prefilter hit costs one or two memory
    reads instead of a binary search. The position of a key in ``keys`` indexes its postings.
    """

    keys: np.ndarray
    bitmap: np.ndarray
    shift: int
    dirs: np.ndarray = field(default_factory=lambda: _EMPTY_DIRS)
    dshift: int = 63

    def __post_init__(self) -> None:
        if self.dirs is _EMPTY_DIRS:
            self.dirs, self.dshift = make_directory(self.keys)

    @classmethod
    def build(cls, keys: np.ndarray) -> "KeySet":
        keys = np.unique(np.asarray(keys, dtype=np.uint64))
        bm, shift = make_bitmap(keys)
        return cls(keys, bm, shift)

    @classmethod
    def empty(cls) -> "KeySet":
        global _EMPTY_KEYSET
        if _EMPTY_KEYSET is None:
            _EMPTY_KEYSET = cls(_EMPTY_U64, _EMPTY_BITMAP, 63)
        return _EMPTY_KEYSET


_EMPTY_KEYSET: KeySet | None = None


def make_directory(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """``(dirs, dshift)``: ``keys[dirs[b]:dirs[b+1]]`` are the sorted keys with ``key >> dshift == b``."""
    keys = np.asarray(keys)
    bits = max(1, int(np.ceil(np.log2(max(len(keys), 2)))))
    bits = min(bits, 30)
    dshift = 64 - bits
    counts = np.bincount((keys >> np.uint64(dshift)).astype(np.int64), minlength=1 << bits) if len(keys) \
        else np.zeros(1 << bits, dtype=np.int64)
    dirs = np.zeros((1 << bits) + 1, dtype=np.int32 if len(keys) < 2**31 else np.int64)
    np.cumsum(counts, out=dirs[1:])
    return dirs, dshift


def string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Zero-copy ``(data bytes, int64 offsets)`` of a string/large_string Arrow array."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_large_string(arr.type):
        off_dtype = np.int64
    elif pa.types.is_string(arr.type):
        off_dtype = np.int32
    else:
        raise TypeError(f"expected a string array, got {arr.type}")
    if arr.null_count:
        arr = pc.fill_null(arr, "")
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_dtype)[arr.offset: arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None and bufs[2].size else np.zeros(1, np.uint8)
    return data, offsets


def scan_arrays(data: np.ndarray, offsets: np.ndarray, modes: np.ndarray, n: int, grams: KeySet,
                phrase_n: int = 0, phrases: KeySet | None = None, emit_tokens: bool = False,
                emit_grams: bool = False, detect_figures: bool = False) -> tuple:
    """Run the kernel on raw buffers. Returns ``(flags, ntok, hit_row, hit_pos, hit_idx,
    hit_kind, tok_hash, tok_start, tok_end, tok_row, gram_row, gram_pos, gram_key)``."""
    if not 1 <= n <= MAX_N or not 0 <= phrase_n <= MAX_N:
        raise ValueError(f"n-gram length must be between 1 and {MAX_N}, got {n} / {phrase_n}")
    cls, cmap = char_tables()
    ph = phrases or KeySet.empty()
    nrows = len(offsets) - 1
    nchars = int(offsets[-1] - offsets[0]) + 1 if nrows else 1
    flags = np.zeros(nrows, dtype=np.uint8)
    ntok = np.zeros(nrows, dtype=np.int64)
    tcap = nchars if emit_tokens else 0
    gcap = nchars if emit_grams else 0
    tok = (np.empty(tcap, np.uint64), np.empty(tcap, np.int64), np.empty(tcap, np.int64), np.empty(tcap, np.int64))
    grm = (np.empty(gcap, np.int64), np.empty(gcap, np.int64), np.empty(gcap, np.uint64))
    hits: list[tuple[np.ndarray, ...]] = []
    toks: list[tuple[np.ndarray, ...]] = []
    grms: list[tuple[np.ndarray, ...]] = []
    cap = 4096
    row = 0
    while True:
        hit = (np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64))
        nxt, nh, nt, ng = _scan(data, offsets, modes, cls, cmap, _CJK_LO, _CJK_HI, _DROP_HASHES, _RENAME_FROM,
                                _FRAC, n, grams.bitmap, np.uint64(grams.shift), grams.keys, grams.dirs,
                                np.uint64(grams.dshift), phrase_n, ph.bitmap, np.uint64(ph.shift), ph.keys,
                                ph.dirs, np.uint64(ph.dshift), row, flags, ntok, *hit, emit_tokens, *tok,
                                emit_grams, *grm, detect_figures, _FIG_ASY, _FIG_ENV1, _FIG_ENV2)
        hits.append(tuple(a[:nh] for a in hit))
        toks.append(tuple(a[:nt] for a in tok))
        grms.append(tuple(a[:ng] for a in grm))
        if nxt >= nrows:
            break
        if nxt == row and nh == 0:
            cap *= 2  # one row has more hits than the arrays hold
        row = nxt
        tok = tuple(a[nt:] for a in tok)  # views: later rows write after earlier ones
        grm = tuple(a[ng:] for a in grm)

    def cat(parts: list[tuple[np.ndarray, ...]], k: int) -> list[np.ndarray]:
        return [np.concatenate([p[j] for p in parts]) if len(parts) > 1 else parts[0][j] for j in range(k)]

    return (flags, ntok, *cat(hits, 4), *cat(toks, 4), *cat(grms, 3))


def scan(texts: pa.Array, n: int, grams: KeySet | None = None, phrase_n: int = 0,
         phrases: KeySet | None = None, emit_tokens: bool = False, emit_grams: bool = False,
         normalized: bool = False, strip_figures: bool = False) -> ScanResult:
    """Scan a string array: every row's tokens, gram keys and hits against ``grams``/``phrases``.

    The result is as if every row had been tokenized with :func:`corpus.textnorm.tokenize`
    (after :func:`corpus.textnorm.strip_figure_code` when ``strip_figures``). Rows the
    kernel cannot finish alone are fixed here and scanned again, in up to three rounds:
    rows with figure code are stripped in Python; rows whose characters need whole-string
    NFKC go through ``pyarrow.compute.utf8_normalize``; what is still left is normalized
    by :func:`corpus.textnorm.normalize_text` and scanned as normalized text.

    Token char offsets refer to the text handed in, except for rows in ``fallback``
    (offsets into their fixed text: use ``corpus.textnorm.token_spans`` there).
    ``ScanResult.figures`` gives the figure-code spans of stripped rows.
    ``normalized=True`` says the texts are already ``normalize_text`` output.
    """
    grams = grams or KeySet.empty()
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    data, offsets = string_buffers(texts)
    nrows = len(texts)
    modes = np.full(nrows, MODE_NORM if normalized else MODE_RAW, dtype=np.uint8)
    out = list(scan_arrays(data, offsets, modes, n, grams, phrase_n, phrases, emit_tokens, emit_grams,
                           detect_figures=strip_figures and not normalized))
    flags = out[0]
    bad = np.flatnonzero(flags)
    figures: dict[int, list[tuple[int, int]]] = {}
    renorm: list[np.ndarray] = []
    n_python = 0
    if len(bad):
        pieces: list[list] = []
        rows_of: list[np.ndarray] = []
        rows = bad
        cur = texts.take(pa.array(rows))
        fl = flags[rows]
        for _round in range(3):
            # fix each flagged row by the cheapest means that can work, then rescan
            soft = fl == FLAG_SOFT
            hard = fl == FLAG_HARD
            mode = np.full(len(rows), MODE_RAW, dtype=np.uint8)
            new = cur
            if _round == 0 and strip_figures and not normalized:
                # figure code is cut from the original text, before any other fix, as
                # corpus.textnorm would: every flagged row, whatever stopped the kernel
                vals = cur.to_pylist()
                for j, v in enumerate(vals):
                    sp = figure_spans(v)
                    if sp:
                        figures[int(rows[j])] = sp
                        vals[j] = strip_figure_code(v)
                new = pa.array(vals, pa.string())
            renorm.append(rows[soft | hard])
            if soft.any():
                new = pc.if_else(pa.array(soft), pc.utf8_normalize(new, "NFKC"), new)
            if hard.any():
                vals = new.to_pylist()
                for j in np.flatnonzero(hard).tolist():
                    vals[j] = normalize_text(vals[j])
                new = pa.array(vals, pa.string())
                mode[hard] = MODE_NORM
                n_python += int(hard.sum())
            d2, o2 = string_buffers(new)
            res = list(scan_arrays(d2, o2, mode, n, grams, phrase_n, phrases, emit_tokens, emit_grams))
            pieces.append(res)
            rows_of.append(rows)
            again = np.flatnonzero(res[0])
            if not len(again):
                break
            # a row NFKC could not repair needs Python; a stripped row may still need NFKC
            nxt = res[0][again].copy()
            nxt[soft[again]] = FLAG_HARD
            rows, cur, fl = rows[again], new.take(pa.array(again)), nxt
        out = _merge(out, pieces, rows_of)
    (_flags, ntok, h_row, h_pos, h_idx, h_kind, t_hash, t_start, t_end, t_row, g_row, g_pos, g_key) = out
    if len(h_row) > 1:
        order = np.lexsort((h_pos, h_kind, h_row))  # by row, then grams before phrases, then position
        h_row, h_pos, h_idx, h_kind = h_row[order], h_pos[order], h_idx[order], h_kind[order]
    return ScanResult(ntok, h_row, h_pos, h_idx, h_kind, t_hash, t_start, t_end, t_row, g_row, g_pos, g_key,
                      fallback=bad, python_rows=n_python, figures=figures,
                      renormalized=np.unique(np.concatenate(renorm)) if renorm else np.zeros(0, np.int64))


def _merge(main: list, pieces: list[list], rows_of: list[np.ndarray]) -> list:
    """Fold rescanned rows into the main result (row ids mapped back, sorted by row).

    Each row's outputs come from exactly one scan: rows that a scan aborted or skipped
    contributed nothing to it.
    """
    ntok = main[1].copy()
    groups = ((2, range(2, 6)), (9, range(6, 10)), (10, range(10, 13)))  # (row column, members)
    cols: dict[int, list[np.ndarray]] = {k: [main[k]] for k in range(2, 13)}
    for res, rows in zip(pieces, rows_of):
        ok = res[0] == 0
        ntok[rows[ok]] = res[1][ok]
        for row_col, members in groups:
            for k in members:
                cols[k].append(rows[res[k]] if k == row_col else res[k])
    merged = [main[0], ntok]
    out: dict[int, np.ndarray] = {}
    for row_col, members in groups:
        row_all = np.concatenate(cols[row_col])
        order = np.argsort(row_all, kind="stable")
        for k in members:
            out[k] = np.concatenate(cols[k])[order]
    merged.extend(out[k] for k in range(2, 13))
    return merged


# ----------------------------------------------------------------------------- reference
def token_hash(token: str) -> int:
    """64-bit hash of one normalized token: splitmix64(FNV-1a 64 of its UTF-8)."""
    return _mix_py(_fnv_bytes(token.encode("utf-8")))


def reference_token_hashes(text: str) -> list[int]:
    """Pure-Python reference: token hashes of ``corpus.textnorm.tokenize(text)``."""
    return [token_hash(t) for t in tokenize(text)]


def reference_gram_keys(hashes: list[int], n: int) -> list[int]:
    """Pure-Python reference: the key of every ``n``-gram, computed directly (not rolling)."""
    out = []
    for s in range(len(hashes) - n + 1):
        h = 0
        for t in hashes[s: s + n]:
            h = (h * GRAM_BASE + t) & MASK64
        out.append(_mix_py(h + n))
    return out


def reference_scan(texts: list[str], n: int, keys: set[int], phrase_n: int = 0,
                   phrase_keys: set[int] | None = None) -> list[tuple[int, int, int, int]]:
    """Pure-Python reference of :func:`scan`'s hits: ``(row, pos, kind, key)``, by row, kind, pos."""
    out: list[tuple[int, int, int, int]] = []
    for r, text in enumerate(texts):
        hs = reference_token_hashes(text)
        g = reference_gram_keys(hs, n)
        p = reference_gram_keys(hs, phrase_n) if phrase_n and phrase_keys else []
        out.extend((r, pos, 0, k) for pos, k in enumerate(g) if k in keys)
        out.extend((r, pos, 1, k) for pos, k in enumerate(p) if k in (phrase_keys or set()))
    return out


def fallback_rows(texts: list[str]) -> list[int]:
    """Rows of ``texts`` the kernel cannot normalize on its own (for tests and stats)."""
    arr = pa.array(texts, pa.string())
    data, offsets = string_buffers(arr)
    flags = scan_arrays(data, offsets, np.zeros(len(texts), np.uint8), 13, KeySet.empty())[0]
    return [int(i) for i in np.flatnonzero(flags)]
