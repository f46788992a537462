"""Answer checking for sampled solutions: extraction, equivalence, majority vote, reward scores.

Owns the rules that decide whether a generated solution "got the answer": pulling the
final answer out of free text (``\\boxed{}`` with nested braces, ``####``, "The answer is",
"答案", the last number, full-width characters), deciding whether two answers are the same
(string normalisation, exact rationals with a numeric tolerance for decimals, sets, tuples,
intervals, then math-verify and sympy for symbolic forms), majority voting over N samples,
and the optional reward-model scorer used for RM@N selection.

The order matters for soundness: cheap structural rules decide first (two different
numbers are different, whatever a symbolic parser makes of them), and math-verify only
sees what those rules cannot settle, so a lenient parse never turns a wrong answer right.
"""

from __future__ import annotations

import json
import math
import re
import signal
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any, Iterator, Protocol

from corpus.errors import ConfigError, FatalError

# ----------------------------------------------------------------------------- extraction
# Full-width ASCII (U+FF01..U+FF5E) maps onto ASCII by a fixed offset; U+3000 is a space.
# Only these are mapped: NFKC would also rewrite e.g. "½" and superscripts.
_HALFWIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}
_HALFWIDTH[0x3000] = 0x20
_HALFWIDTH.update({ord("。"): ord("."), ord("－"): ord("-"), ord("−"): ord("-")})


def to_halfwidth(text: str) -> str:
    """Map full-width digits, letters and punctuation (and the ideographic space) to ASCII."""
    return text.translate(_HALFWIDTH)


_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")


def find_boxed(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` / ``\\fbox{...}`` in order, nested braces balanced.

    ``\\boxed 5`` (no braces, as some models write) yields the next token. An unbalanced
    ``\\boxed{`` at the end of a truncated sample yields nothing.
    """
    out: list[str] = []
    for m in _BOX_RE.finditer(text):
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth = 0
            for k in range(i, len(text)):
                c = text[k]
                if c == "{" and (k == 0 or text[k - 1] != "\\"):
                    depth += 1
                elif c == "}" and text[k - 1] != "\\":
                    depth -= 1
                    if depth == 0:
                        out.append(text[i + 1:k].strip())
                        break
        elif i < len(text) and m.group(0)[-1].isspace():
            tok = re.match(r"[^\s$]+", text[i:])
            if tok:
                out.append(tok.group(0).rstrip(".,;"))
    return out


# Phrases that introduce a final answer, in English and Chinese. The *last* occurrence in
# the text wins, as models often restate intermediate results before concluding.
_PHRASE_RE = re.compile(
    r"(?:####|(?:the\s+)?final\s+answer\s*(?:is|:)|the\s+answer\s+is\s*:?|answer\s*:|"
    r"答案\s*(?:是|为|為|:|：)|最终答案\s*(?:是|为)?\s*[:：]?)\s*",
    re.IGNORECASE,
)
_NUMBER_RE = re.compile(
    r"-?\\[dt]?frac\{-?\d+\}\{\d+\}"        # \frac{1}{2}
    r"|-?\d{1,3}(?:,\d{3})+(?:\.\d+)?"      # 1,234,567.5
    r"|-?\d+(?:\.\d+)?(?:/\d+)?"            # 12, 3.5, 7/8
    r"|-?\.\d+"                             # .5
)


def last_number(text: str) -> str | None:
    """The last number in ``text`` (integers, decimals, ``a/b``, ``\\frac{a}{b}``, 1,234)."""
    found = _NUMBER_RE.findall(to_halfwidth(text))
    return found[-1] if found else None


def _clean_phrase_answer(s: str) -> str:
    s = s.strip()
    # the answer ends at the end of the line or of the sentence
    s = s.split("\n", 1)[0].strip()
    s = re.sub(r"\.\s+\S.*$", "", s)  # "42. Next we..." -> "42" (decimals have no space)
    s = s.strip().rstrip("。.．;,，").strip()
    if s.startswith("$") and s.endswith("$") and len(s) > 1:
        s = s.strip("$").strip()
    elif s.startswith("\\(") and s.endswith("\\)"):
        s = s[2:-2].strip()
    elif s.startswith("\\[") and s.endswith("\\]"):
        s = s[2:-2].strip()
    return s


def extract_answer(text: str, *, last_number_fallback: bool = True, max_phrase_chars: int = 80) -> str | None:
    """The final answer written in ``text``, or None when there is none.

    Order: the last ``\\boxed{}``; else the last answer phrase ("####", "The answer is",
    "Final answer:", "答案是"); else (optionally) the last number in the text.
    """
    if not text:
        return None
    t = to_halfwidth(text)
    boxed = find_boxed(t)
    if boxed:
        return boxed[-1]
    matches = list(_PHRASE_RE.finditer(t))
    for m in reversed(matches):
        ans = _clean_phrase_answer(t[m.end():])
        if ans and len(ans) <= max_phrase_chars:
            return ans
        if ans:  # a long sentence after the phrase: its first number is the answer
            num = _NUMBER_RE.search(ans)
            if num:
                return num.group(0)
    if last_number_fallback:
        return last_number(t)
    return None


# ----------------------------------------------------------------------------- normalisation
_TEXT_CMDS = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\q?quad|~")
_DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree|\^\{\\text\{o\}\}")
_LEADING_ZEROS = re.compile(r"(?<![\d.])0+(?=\d)")
_THOUSANDS = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")
# "5 inches", "45 mph", "12 cm^2": a bare number, whitespace, then up to three words.
_UNIT_TAIL = re.compile(r"^(-?[\d.]+(?:/\d+)?)\s+(?:[a-zA-Z]+\.?(?:\^\{?[23]\}?)?\s*){1,3}$")
_SINGLE_VAR_EQ = re.compile(r"^\s*(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?\s*=\s*(?!.*=)(.+)$")


def _strip_math_delims(s: str) -> str:
    s = s.strip()
    changed = True
    while changed:
        changed = False
        for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if len(s) >= len(a) + len(b) and s.startswith(a) and s.endswith(b):
                s = s[len(a):len(s) - len(b)].strip()
                changed = True
    return s


@lru_cache(maxsize=65536)
def normalize_answer(answer: str) -> str:
    """A canonical string for an answer: same string means same answer.

    Unwraps ``\\text{}``-like commands, drops math delimiters, ``\\left``/``\\right``,
    spacing commands, degree signs, percent signs and trailing units after a bare number,
    maps ``\\dfrac``/``\\tfrac`` to ``\\frac``, removes thousands separators and leading
    zeros, reduces ``x = 5`` to ``5`` and ``(C)`` to ``C``, then removes all whitespace.
    """
    s = to_halfwidth(answer).strip()
    s = _strip_math_delims(s)
    s = s.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\[dt]binom", r"\\binom", s)
    s = _SPACING.sub(" ", s)
    for _ in range(3):  # nested \text{\textbf{..}}; spaces keep "5\text{cm}" two words
        s = _TEXT_CMDS.sub(r" \1 ", s)
    s = _DEGREE.sub("", s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\s+(?:and|or|和|或)\s+", ",", s)
    s = s.strip().rstrip(".")
    s = re.sub(r"^\s*[a-zA-Z]\s*\\in\s*", "", s)  # "x \in [2,5)" -> "[2,5)"
    m = _SINGLE_VAR_EQ.match(s)
    if m and "," not in s:
        s = m.group(1)
    m = _UNIT_TAIL.match(s.strip())
    if m:
        s = m.group(1)
    s = re.sub(r"\s+", "", s)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    s = _LEADING_ZEROS.sub("", s)
    m = re.fullmatch(r"\(([A-Z])\)", s)
    if m:
        s = m.group(1)
    s = brace_shorthand(s)
    if re.fullmatch(r"[A-Za-z][A-Za-z ]+", s):
        s = s.lower()
    if s.endswith(".0") and re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s


_SHORTHAND_ARGS = {"\\frac": 2, "\\sqrt": 1, "\\binom": 2}
_CMD = re.compile(r"\\[a-zA-Z]+")


def brace_shorthand(s: str) -> str:
    """Brace the arguments of ``\\frac``/``\\sqrt``/``\\binom`` written without braces.

    ``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac\\pi4`` -> ``\\frac{\\pi}{4}``, ``\\sqrt2`` ->
    ``\\sqrt{2}``. LaTeX reads one token per argument; parsers that expect braces
    otherwise misread these (math-verify reads ``\\frac \\pi4 + 2`` as ``2``).
    """
    out: list[str] = []
    i = 0
    while i < len(s):
        m = _CMD.match(s, i)
        if not m:
            out.append(s[i])
            i += 1
            continue
        cmd = m.group(0)
        out.append(cmd)
        i = m.end()
        nargs = _SHORTHAND_ARGS.get(cmd, 0)
        if cmd == "\\sqrt" and i < len(s) and s[i] == "[":  # \sqrt[3]{x}
            j = s.find("]", i)
            if j < 0:
                break
            out.append(s[i:j + 1])
            i = j + 1
        for _ in range(nargs):
            while i < len(s) and s[i] == " ":
                i += 1
            if i >= len(s):
                break
            if s[i] == "{":
                depth = 0
                for k in range(i, len(s)):
                    depth += s[k] == "{"
                    depth -= s[k] == "}"
                    if depth == 0:
                        break
                arg = brace_shorthand(s[i + 1:k])
                out.append("{" + arg + "}")
                i = k + 1
            else:
                tok = _CMD.match(s, i)
                arg = tok.group(0) if tok else s[i]
                out.append("{" + arg + "}")
                i += len(arg)
    return "".join(out)


# ----------------------------------------------------------------------------- numbers
_FRAC = re.compile(r"^(-?)\\frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}$")


@lru_cache(maxsize=65536)
def parse_number(norm: str) -> tuple[Fraction, bool] | None:
    """(value, exact) for a normalised number string, else None.

    ``exact`` is False for decimals, which are compared with a relative tolerance.
    """
    s = norm
    if not s or len(s) > 64:
        return None
    try:
        m = _FRAC.match(s)
        if m:
            num, den = Fraction(m.group(2)), Fraction(m.group(3))
            if den == 0:
                return None
            v = num / den
            return (-v if m.group(1) else v), "." not in s
        if re.fullmatch(r"-?\d+", s):
            return Fraction(int(s)), True
        if re.fullmatch(r"-?(?:\d+\.\d*|\.\d+)", s):
            return Fraction(s), False
        if re.fullmatch(r"-?\d+/\d+", s):
            a, b = s.split("/")
            if int(b) == 0:
                return None
            return Fraction(int(a), int(b)), True
        if re.fullmatch(r"-?\d+(?:\.\d+)?[eE][-+]?\d+", s):
            return Fraction(s), False
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


_BASE_N = re.compile(r"^(-?)([0-9A-Za-z]+(?:\.[0-9A-Za-z]+)?)_\{?(\d+)\}?$")


def parse_base_number(norm: str) -> Fraction | None | bool:
    """Value of a base-b numeral such as ``4210_{7}`` or ``0.0011_2``.

    Returns False when ``norm`` is not written in base notation, None when it is but is
    not a valid numeral (a digit too large for the base), else the exact value.
    """
    m = _BASE_N.match(norm)
    if not m:
        return False
    sign, digits, base = m.group(1), m.group(2), int(m.group(3))
    if not 2 <= base <= 36:
        return None
    whole, _, frac = digits.partition(".")
    try:
        v = Fraction(int(whole, base))
        for k, d in enumerate(frac, start=1):
            dv = int(d, base)
            v += Fraction(dv, base ** k)
    except ValueError:
        return None
    return -v if sign else v


def numbers_equal(a: tuple[Fraction, bool], b: tuple[Fraction, bool], rel_tol: float) -> bool:
    """Exact for integers and fractions; within ``rel_tol`` when either side is a decimal."""
    (va, ea), (vb, eb) = a, b
    if va == vb:
        return True
    if ea and eb:
        return False
    scale = max(abs(va), abs(vb))
    return abs(va - vb) <= Fraction(rel_tol) * scale


# ----------------------------------------------------------------------------- structures
_OPEN = "([{"
_CLOSE = ")]}"


def split_top_level(s: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside of (), [] and {} (a LaTeX ``\\{`` counts as a brace)."""
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        if depth == 0 and s.startswith(sep, i):
            parts.append("".join(cur))
            cur = []
            i += len(sep)
            continue
        cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _balanced(s: str) -> bool:
    depth = 0
    for c in s:
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


@dataclass(frozen=True)
class Structure:
    """An answer made of parts: ``kind`` is set, tuple, interval, union or list."""

    kind: str
    items: tuple[str, ...]
    brackets: str = ""


def parse_structure(norm: str) -> Structure | None:
    """Recognise sets ``\\{a,b\\}``, tuples/intervals ``(a,b]``, unions and bare lists ``a,b``."""
    s = norm
    if "\\cup" in s:
        parts = split_top_level(s, "\\cup")
        if len(parts) > 1 and all(parts):
            return Structure("union", tuple(parts))
    if s.startswith("\\{") and s.endswith("\\}") and _balanced(s[2:-2]):
        return Structure("set", tuple(p for p in split_top_level(s[2:-2]) if p))
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _balanced(s[1:-1]):
        inner = split_top_level(s[1:-1])
        if len(inner) >= 2:
            kind = "interval" if len(inner) == 2 and (s[0] != "(" or s[-1] != ")" or "infty" in s) else "tuple"
            return Structure(kind, tuple(inner), s[0] + s[-1])
    parts = split_top_level(s)
    if len(parts) >= 2 and all(parts):
        return Structure("list", tuple(parts))
    return None


# ----------------------------------------------------------------------------- symbolic
@contextmanager
def _time_limit(seconds: float) -> Iterator[bool]:
    """SIGALRM-based limit in the main thread; elsewhere no limit (yields False)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield False
        return

    def _raise(signum: int, frame: Any) -> None:
        raise TimeoutError("answer comparison timed out")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@lru_cache(maxsize=1)
def _math_verify() -> Any:
    """Import math-verify once; its no-timeout warning is silenced because _time_limit is ours."""
    import math_verify
    import math_verify.grader
    import math_verify.parser

    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    return math_verify


@lru_cache(maxsize=16384)
def _mv_parse(latex: str) -> Any:
    parse = _math_verify().parse
    # math-verify's own signal timeout is whole seconds and refuses non-main threads;
    # _time_limit around the call is the guard instead.
    return parse(f"${latex}$", parsing_timeout=None)  # type: ignore[arg-type]


def math_verify_equal(pred: str, ref: str, timeout_s: float = 5.0) -> bool:
    """math-verify's verdict (ref is the gold side), False on parse failure or timeout."""
    verify = _math_verify().verify
    try:
        with _time_limit(timeout_s):
            g = _mv_parse(ref)
            p = _mv_parse(pred)
            if not g or not p:
                return False
            if not verify(g, p, timeout_seconds=None):  # type: ignore[arg-type]
                return False
            return _exact_numeric_agrees(g[0], p[0])
    except TimeoutError:
        return False
    except Exception:  # noqa: BLE001 - latex2sympy/sympy raise anything on odd input
        return False


def _exact_numeric_agrees(a: Any, b: Any) -> bool:
    """Re-check a math-verify match of two constants at 50 significant digits.

    math-verify compares numbers after rounding to 6 decimals, so ``1/2004!`` equals
    ``2/2004!`` there; a relative comparison at high precision tells them apart.
    Anything that is not a pair of closed-form constants keeps math-verify's verdict.
    """
    try:
        from sympy import Expr

        if not (isinstance(a, Expr) and isinstance(b, Expr) and a.is_number and b.is_number):
            return True
        with _time_limit(2.0):
            va, vb = a.evalf(50), b.evalf(50)
            scale = max(abs(va), abs(vb))
            if scale == 0:
                return True
            return bool(abs(va - vb) <= scale * 1e-12)
    except TimeoutError:
        return True
    except Exception:  # noqa: BLE001 - evalf on odd objects (matrices, sets) raises many kinds
        return True


_SYMPY_OK = re.compile(r"^[\w\s+\-*/^().]+$")


def sympy_equal(pred: str, ref: str, timeout_s: float = 5.0) -> bool:
    """Equality of plain-text expressions (``2*x+1``, ``sqrt(2)/2``) by sympy simplification."""
    if not (_SYMPY_OK.match(pred) and _SYMPY_OK.match(ref)):
        return False
    from sympy import simplify
    from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                            standard_transformations)

    tr = standard_transformations + (implicit_multiplication_application, convert_xor)
    try:
        with _time_limit(timeout_s):
            a = parse_expr(pred, transformations=tr, evaluate=True)
            b = parse_expr(ref, transformations=tr, evaluate=True)
            return bool(simplify(a - b) == 0)
    except TimeoutError:
        return False
    except Exception:  # noqa: BLE001 - sympy parse errors come in many classes
        return False


# ----------------------------------------------------------------------------- equivalence
@dataclass(frozen=True)
class CheckOptions:
    """How strict equivalence is.

    ``rel_tol`` applies only when a decimal is involved (integers and fractions compare
    exactly); the default absorbs float noise such as 0.30000000000000004 but not a
    different last digit (16386.16 vs 16386.17 differ by 6e-7 relative).
    """

    rel_tol: float = 1e-9
    use_math_verify: bool = True
    use_sympy: bool = True
    timeout_s: float = 5.0


DEFAULT_CHECK = CheckOptions()


def is_equiv(pred: str | None, ref: str | None, opts: CheckOptions = DEFAULT_CHECK) -> bool:
    """Whether answer ``pred`` is the same mathematical answer as reference ``ref``."""
    if pred is None or ref is None:
        return False
    return _equiv(pred, ref, opts, 0)


def _equiv(pred: str, ref: str, opts: CheckOptions, depth: int) -> bool:
    a, b = normalize_answer(pred), normalize_answer(ref)
    if not a or not b:
        return False
    if a == b:
        return True
    na, nb = parse_number(a), parse_number(b)
    if na is not None and nb is not None:
        return numbers_equal(na, nb, opts.rel_tol)
    ba, bb = parse_base_number(a), parse_base_number(b)
    if ba is not False or bb is not False:
        # "4210_7" names a number in base 7; symbolic parsers read the subscript as a
        # label and would call 4210_7 and 4210_8 equal.
        va = ba if ba is not False else (na[0] if na else None)
        vb = bb if bb is not False else (nb[0] if nb else None)
        return va is not None and vb is not None and va == vb
    sa, sb = parse_structure(a), parse_structure(b)
    if (sa is not None or sb is not None) and depth < 4:
        if sa is None or sb is None:
            # one side is a collection, the other a single value: only a one-element set
            # can equal a single value, and parse_structure never returns those.
            return (na is None and nb is None and opts.use_math_verify and
                    math_verify_equal(a, b, opts.timeout_s) and _same_arity(a, b))
        return _structures_equal(sa, sb, opts, depth)
    if na is not None or nb is not None:
        # a number against an expression (e.g. "\sqrt{4}" vs "2"): symbolic check only
        return opts.use_math_verify and math_verify_equal(a, b, opts.timeout_s)
    if _plain_word(a) or _plain_word(b):
        return False  # different words ("odd" vs "even"); no parser should decide this
    if opts.use_math_verify and math_verify_equal(a, b, opts.timeout_s):
        return True
    return opts.use_sympy and sympy_equal(a, b, opts.timeout_s)


def _plain_word(s: str) -> bool:
    return bool(re.fullmatch(r"[a-z]{3,}", s)) or bool(re.fullmatch(r"[A-Z]", s))


def _same_arity(a: str, b: str) -> bool:
    return len(split_top_level(a)) == len(split_top_level(b))


def _structures_equal(sa: Structure, sb: Structure, opts: CheckOptions, depth: int) -> bool:
    unordered = {"set", "list"}
    if sa.kind in unordered and sb.kind in unordered:
        return _multiset_equal(sa.items, sb.items, opts, depth)
    if sa.kind != sb.kind and {sa.kind, sb.kind} != {"tuple", "interval"}:
        return False
    if sa.brackets != sb.brackets or len(sa.items) != len(sb.items):
        return False
    if sa.kind == "union":
        return _multiset_equal(sa.items, sb.items, opts, depth)
    return all(_equiv(x, y, opts, depth + 1) for x, y in zip(sa.items, sb.items))


def _multiset_equal(xs: Sequence[str], ys: Sequence[str], opts: CheckOptions, depth: int) -> bool:
    if len(xs) != len(ys):
        return False
    left = list(ys)
    for x in xs:
        for j, y in enumerate(left):
            if _equiv(x, y, opts, depth + 1):
                del left[j]
                break
        else:
            return False
    return True


def check_solution(solution: str, reference: str | None, opts: CheckOptions = DEFAULT_CHECK) -> bool:
    """Extract the final answer of ``solution`` and compare it with ``reference``."""
    return is_equiv(extract_answer(solution), reference, opts)


# ----------------------------------------------------------------------------- voting
@dataclass
class Vote:
    """The result of a majority vote over N extracted answers.

    ``labels[i]`` is the group of sample ``i`` (None when it had no answer); ``winner`` is
    the index of the largest group (ties go to the group seen first), None if no answers.
    """

    answers: list[str | None]
    labels: list[int | None]
    groups: list[list[int]] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    winner: int | None = None

    @property
    def answer(self) -> str | None:
        return None if self.winner is None else self.answers[self.groups[self.winner][0]]

    @property
    def count(self) -> int:
        return 0 if self.winner is None else len(self.groups[self.winner])

    def unique_winner(self) -> bool:
        """True when the winning weight is strictly larger than every other group's."""
        if self.winner is None:
            return False
        top = self.weights[self.winner]
        return sum(1 for w in self.weights if w == top) == 1


def majority_vote(answers: Sequence[str | None], weights: Sequence[float] | None = None,
                  opts: CheckOptions = DEFAULT_CHECK,
                  equiv: Callable[[str, str, CheckOptions], bool] | None = None) -> Vote:
    """Group equivalent answers and pick the heaviest group (weights default to 1 each).

    Answers with the same normalised string join a group without a symbolic comparison,
    so voting over N samples costs at most one comparison per distinct answer per group.
    """
    eq = equiv or (lambda x, y, o: is_equiv(x, y, o))
    w = list(weights) if weights is not None else [1.0] * len(answers)
    if len(w) != len(answers):
        raise ValueError(f"majority_vote: {len(answers)} answers but {len(w)} weights")
    vote = Vote(answers=list(answers), labels=[None] * len(answers))
    by_key: dict[str, int] = {}
    for i, ans in enumerate(answers):
        if ans is None or not normalize_answer(ans):
            continue
        key = normalize_answer(ans)
        g = by_key.get(key)
        if g is None:
            for gi, members in enumerate(vote.groups):
                if eq(ans, answers[members[0]], opts):  # type: ignore[arg-type]
                    g = gi
                    break
        if g is None:
            g = len(vote.groups)
            vote.groups.append([])
            vote.weights.append(0.0)
        by_key[key] = g
        vote.groups[g].append(i)
        vote.weights[g] += w[i]
        vote.labels[i] = g
    if vote.groups:
        best = max(vote.weights)
        vote.winner = next(i for i, x in enumerate(vote.weights) if x == best)
    return vote


# ----------------------------------------------------------------------------- reward model
class RewardScorer(Protocol):
    """Scores (conversation, response) pairs; higher is better. Used for RM@N selection."""

    def score(self, messages: Sequence[Sequence[dict[str, str]]], responses: Sequence[str]) -> list[float]:
        ...


class HTTPRewardScorer:
    """A reward model served by ``vllm serve <rm> --task reward`` (the ``/pooling`` endpoint).

    Each request sends the chat with the response as the last assistant turn; vLLM returns
    the pooled reward (one value, or one per token, of which the last is the sequence's).
    """

    def __init__(self, base_url: str, model: str, timeout_s: float = 120.0, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.api_key_env = api_key_env
        self.concurrency = concurrency

    def _url(self) -> str:
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        return f"{root}/pooling"

    def score(self, messages: Sequence[Sequence[dict[str, str]]], responses: Sequence[str]) -> list[float]:
        import os
        from concurrent.futures import ThreadPoolExecutor

        import httpx

        headers = {}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"

        def one(pair: tuple[Sequence[dict[str, str]], str]) -> float:
            conv = [dict(m) for m in pair[0]] + [{"role": "assistant", "content": pair[1]}]
            body = {"model": self.model, "messages": conv}
            try:
                r = httpx.post(self._url(), json=body, headers=headers, timeout=self.timeout_s)
            except httpx.HTTPError as exc:
                raise FatalError(f"reward model at {self._url()}: request failed ({exc}); check that "
                                 "`vllm serve <rm> --task reward` is running and --rm-url is right") from exc
            if r.status_code != 200:
                raise FatalError(f"reward model at {self._url()}: HTTP {r.status_code}: {r.text[:200]}")
            return _last_float(r.json())

        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(one, zip(messages, responses)))


def _last_float(obj: Any) -> float:
    """The last number in a (nested) pooling response: ``{"data": [{"data": [..]}]}``."""
    if isinstance(obj, dict):
        for key in ("data", "score", "reward", "embedding"):
            if key in obj:
                return _last_float(obj[key])
        raise FatalError(f"reward model response has no data/score field: {json.dumps(obj)[:200]}")
    if isinstance(obj, list):
        if not obj:
            raise FatalError("reward model returned an empty score list")
        return _last_float(obj[-1])
    if isinstance(obj, (int, float)) and not isinstance(obj, bool) and math.isfinite(obj):
        return float(obj)
    raise FatalError(f"reward model returned a non-numeric score: {obj!r}")


def load_scorer(spec: str | None, model: str | None = None, **kwargs: Any) -> RewardScorer | None:
    """A scorer from a URL (vLLM RM server) or ``module:callable`` (a factory returning one)."""
    if not spec:
        return None
    if spec.startswith(("http://", "https://")):
        if not model:
            raise ConfigError("synth: rm_url is set but rm_model is not; pass --rm-model with the served "
                              "reward model's name")
        return HTTPRewardScorer(spec, model, **kwargs)
    mod, _, attr = spec.partition(":")
    if not attr:
        raise ConfigError(f"synth: rm_url '{spec}' is neither an http(s) URL nor 'module:callable'")
    try:
        import importlib

        factory = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"synth: cannot load reward scorer '{spec}' ({exc}); check the module path") from exc
    return factory(model) if model else factory()
