"""Functions that run inside the grading worker processes (never on the event loop).

`math-verify` parses LaTeX into sympy; sympy can take unbounded time on adversarial
input, so these run in worker processes that the pool kills on timeout. math-verify's
own timeouts (signal.alarm) are switched off: the pool enforces them.

Every normalised answer gets a canonical key, `<flag><kind>:<body>`:

- flag `=`: the key is exact -- two answers with different exact keys are different.
  Numbers, polynomials, tuples, sets and intervals of those, base-`b` numbers, words and
  unparsed strings are exact. Flag `~` (expressions sympy cannot put in one normal form,
  such as trigonometric ones): an unequal key of a compatible kind goes to `check_pair`.
- Numbers are keyed by value, exactly: rationals with big terms as `p/q`, everything else
  as 30 significant digits, after every decimal in the answer was read as the exact
  rational it spells. So `1.25` is `\\frac54` and `0.5` is `\\frac12`, but `0.333` is not
  `\\frac13` and `7.1414284` is not `\\sqrt{51}`: a rounded decimal is another number
  (a problem that asks for rounding has a rounded gold).
- `(a, b)` is an ordered pair, and the open interval from a to b is the same key (they
  are spelled alike). `[a, b]`, `[a, b)`, `(a, b]` are intervals. `\\{a, b\\}` and a bare
  list `a, b` are sets: the order of their members does not matter, and a set never
  equals a tuple. An inequality in one variable is its solution set (`x > 1` is
  `(1, \\infty)`), a list of inequalities their union; `x = 7` and `x \\in S` answer 7
  and S. `a \\pm b` is the set {a + b, a - b}. A free `i` is the imaginary unit.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .normalize import Structure, normalize_answer, split_structure

KEY_DIGITS = 30
"""Significant digits of a numeric key: decimals shorter than this are exact."""
EXACT_RATIONAL_LIMIT = 10**25
"""Rationals with a term beyond this are keyed as p/q: digits would merge neighbours."""
MAX_DEPTH = 6
MAX_PARSE_CHARS = 400
_SCALAR_KINDS = frozenset({"num", "poly", "expr"})
_BASE_NUMBER = re.compile(r"[0-9A-Z]+_\{\d{1,2}\}")
_BASE_INSIDE = re.compile(r"(?<![\w\\^_{.])[0-9A-Z]*\d[0-9A-Z]*_\{\d{1,2}\}")
_WORD = re.compile(r"[A-Za-z][A-Za-z' -]*[A-Za-z]")
_ASSIGNMENT = re.compile(r"^([A-Za-z](?:_\{?\w+\}?)?)\s*(?:=|\\in(?![A-Za-z]))\s*(?=\S)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_FRACTION = re.compile(r"(-?)(?:\\frac\{(-?\d+)\}\{(-?\d+)\}|(\d+)/(\d+))")
_WARM_UP_FORMS = (
    "\\frac{1}{2}", "x^2+2x+1", "(x+1)^2", "3\\sqrt{2}", "\\frac{\\pi}{2}", "1+2i",
    "x>1", "1<x\\le3", "-\\frac{1}{2}+\\frac{\\sqrt{3}}{2}i", "2k+2", "\\sin^2x",
    "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\log_28", "10^{3}", "e^{2}",
)  # fmt: skip


@dataclass(frozen=True)
class Canon:
    """A canonical key and the sympy object behind it (None for plain strings)."""

    key: str
    obj: Any = None
    relation: bool = False  # an inequality's solution set: a list of them is their union


def key_kind(key: str) -> str:
    return key[1 : key.index(":")]


def is_exact(key: str) -> bool:
    return key.startswith("=")


def needs_check(key_a: str, key_b: str) -> bool:
    """Can two unequal keys still be the same answer? Only when one is not exact and
    both are of one kind (or both scalars): a number is never a set, a set never a tuple."""
    if key_a == key_b or (is_exact(key_a) and is_exact(key_b)):
        return False
    kind_a, kind_b = key_kind(key_a), key_kind(key_b)
    return kind_a == kind_b or {kind_a, kind_b} <= _SCALAR_KINDS


def _opaque(text: str) -> Canon:
    return Canon("=str:" + text)


def _inexact(kind: str, obj: Any) -> Canon:
    import sympy

    body = sympy.srepr(obj)
    if len(body) > 300:
        body = hashlib.sha1(body.encode()).hexdigest()
    return Canon(f"~{kind}:{body}", obj)


def _combine(kind: str, body: str, children: list[Canon], obj: Any) -> Canon:
    flag = "=" if all(is_exact(child.key) for child in children) else "~"
    return Canon(f"{flag}{kind}:{body}", obj)


def _parse(text: str) -> Any:
    """math-verify's sympy reading of one value, or None where it has none."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled": we know
    import sympy
    from math_verify import parse
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    parsed = parse(
        f"${text}$",
        extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
        parsing_timeout=None,
    )
    if parsed and isinstance(parsed[0], (sympy.Basic, sympy.MatrixBase)):
        return parsed[0]
    return None


def _fast_number(text: str) -> Any:
    """Integers, decimals, plain fractions and infinities without the LaTeX parser."""
    import sympy

    if _NUMBER.fullmatch(text):
        return sympy.Rational(text)
    fraction = _FRACTION.fullmatch(text)
    if fraction:
        sign, num, den = fraction.group(1), *(g for g in fraction.groups()[1:] if g)
        return None if int(den) == 0 else sympy.Rational(int(sign + num), int(den))
    return {"\\infty": sympy.oo, "-\\infty": -sympy.oo}.get(text)


def _strip_assignment(text: str) -> tuple[str | None, str]:
    """`x = 7` answers 7 and `x \\in S` answers S, unless x is in the right-hand side."""
    match = _ASSIGNMENT.match(text)
    if not match or "=" in text[match.end() :]:
        return None, text
    name, rest = match.group(1), text[match.end() :]
    if re.search(rf"(?<![A-Za-z\\]){re.escape(name)}(?![A-Za-z])", rest):
        return None, text
    return name, rest


def _expand_pm(text: str) -> list[str]:
    """`a \\pm b` is two answers, a + b and a - b (every sign flips together)."""
    if "\\pm" not in text and "\\mp" not in text:
        return [text]
    plus = re.sub(r"\\pm(?![A-Za-z])", "+", re.sub(r"\\mp(?![A-Za-z])", "-", text))
    minus = re.sub(r"\\pm(?![A-Za-z])", "-", re.sub(r"\\mp(?![A-Za-z])", "+", text))
    return [plus, minus]


def _unbrace(text: str) -> str:
    """`{\\frac{4}{11}}` (a converted repeating decimal) is `\\frac{4}{11}`."""
    while text.startswith("{") and text.endswith("}"):
        depth = 0
        for index, char in enumerate(text):
            depth += {"{": 1, "}": -1}.get(char, 0)
            if depth == 0 and index < len(text) - 1:
                return text
        text = text[1:-1]
    return text


@functools.lru_cache(maxsize=8192)
def canonical(text: str, depth: int = 0) -> Canon:
    """The canonical key of a normalised answer (see the module docstring)."""
    text = _unbrace(text.strip())
    if not text:
        return _opaque("")
    if depth > MAX_DEPTH or len(text) > MAX_PARSE_CHARS:
        return _opaque(text)
    if _BASE_NUMBER.fullmatch(text):
        return Canon("=base:" + text)
    if _WORD.fullmatch(text) and sum(c.isalpha() for c in text) >= 3:
        return Canon("=word:" + text.lower().replace(" ", ""))
    _, text = _strip_assignment(text)
    structure = split_structure(text)
    if structure is not None:
        return _canon_structure(structure, depth + 1)
    if _BASE_INSIDE.search(text):
        return _opaque(text)  # math-verify would drop the base
    values = _expand_pm(text)
    if len(values) == 2:
        return _canon_set([canonical(value, depth + 1) for value in values])
    value = _fast_number(text)
    if value is None:
        value = _parse(text)
    return _opaque(text) if value is None else _canon_sympy(value)


def _canon_structure(structure: Structure, depth: int) -> Canon:
    if structure.kind == "union":
        return _canon_union([canonical(part, depth) for part in structure.parts])
    if structure.kind == "set":
        return _canon_list(structure.parts, depth)
    children = [canonical(part, depth) for part in structure.parts]
    if structure.kind == "interval":
        return _canon_interval(structure.brackets, *children)
    return _canon_sequence(children)


def _canon_list(parts: tuple[str, ...], depth: int) -> Canon:
    """A set; a list of inequalities is their union; `x=1, y=2` is the pair by name."""
    import sympy

    parts = tuple(value for part in parts for value in _expand_pm(part.strip()))
    named = [_strip_assignment(part) for part in parts]
    names = [name for name, _ in named]
    children = [canonical(rest, depth) for _, rest in named]
    if children and all(child.relation for child in children):
        return _canon_sympy(sympy.Union(*(child.obj for child in children)), relation=True)
    if None not in names and len(set(names)) == len(names) > 1:
        ordered = sorted(zip(names, children, strict=True), key=lambda pair: pair[0])
        return _canon_sequence([child for _, child in ordered])
    return _canon_set(children)


def _objects(children: list[Canon]) -> list[Any] | None:
    objs = [child.obj for child in children]
    return None if any(obj is None for obj in objs) else objs


def _canon_set(children: list[Canon]) -> Canon:
    import sympy

    keys = sorted({child.key for child in children})
    objs = _objects(children)
    obj = sympy.FiniteSet(*objs) if objs is not None else None
    return _combine("set", "{" + ";".join(keys) + "}", children, obj)


def _canon_sequence(children: list[Canon]) -> Canon:
    import sympy

    objs = _objects(children)
    obj = sympy.Tuple(*objs) if objs is not None else None
    body = "(" + "|".join(child.key for child in children) + ")"
    return _combine("tup", body, children, obj)


def _canon_interval(brackets: str, low: Canon, high: Canon) -> Canon:
    import sympy

    if brackets == "()":
        return _canon_sequence([low, high])
    obj = None
    if low.obj is not None and high.obj is not None:
        try:
            obj = sympy.Interval(low.obj, high.obj, brackets[0] == "(", brackets[1] == ")")
        except (TypeError, ValueError):
            obj = None
    body = f"{brackets[0]}{low.key}|{high.key}{brackets[1]}"
    return _combine("ivl", body, [low, high], obj)


def _canon_union(children: list[Canon]) -> Canon:
    import sympy

    objs = _objects(children)
    try:
        obj = sympy.Union(*objs, evaluate=False) if objs is not None else None
    except (TypeError, ValueError):
        obj = None
    body = "{" + ";".join(sorted({child.key for child in children})) + "}"
    return _combine("union", body, children, obj)


def _prepare(obj: Any) -> Any:
    """Decimals as the exact rationals they spell, a free `i` as the imaginary unit,
    percent wrappers (`UnevaluatedExpr`) dropped."""
    import sympy

    if isinstance(obj, sympy.MatrixBase):
        obj = sympy.ImmutableMatrix(obj)
    swaps = {f: sympy.Rational(str(f)) for f in obj.atoms(sympy.Float)}
    swaps.update({s: sympy.I for s in obj.free_symbols if getattr(s, "name", "") == "i"})
    obj = obj.xreplace(swaps) if swaps else obj
    if obj.has(sympy.UnevaluatedExpr):
        obj = obj.replace(lambda e: isinstance(e, sympy.UnevaluatedExpr), lambda e: e.args[0])
    return obj


def _canon_sympy(obj: Any, relation: bool = False) -> Canon:
    """The canonical key of a parsed sympy object."""
    import sympy

    obj = _prepare(obj)
    if isinstance(obj, sympy.Eq):
        return _canon_equation(obj)
    if isinstance(obj, (sympy.core.relational.Relational, sympy.And, sympy.Or)):
        return _canon_inequality(obj)
    if isinstance(obj, sympy.FiniteSet):
        args = getattr(obj, "_unsorted_args", obj.args)
        return _canon_set([_canon_sympy(arg) for arg in args])
    if isinstance(obj, sympy.Tuple):
        return _canon_sequence([_canon_sympy(arg) for arg in obj.args])
    if obj == sympy.S.Reals:
        obj = sympy.Interval(-sympy.oo, sympy.oo, True, True)
    if isinstance(obj, sympy.Interval):
        brackets = ("(" if obj.left_open else "[") + (")" if obj.right_open else "]")
        ends = [_canon_sympy(obj.start), _canon_sympy(obj.end)]
        return Canon(_canon_interval(brackets, *ends).key, obj, relation)
    if isinstance(obj, sympy.Union):
        return Canon(_canon_union([_canon_sympy(arg) for arg in obj.args]).key, obj, relation)
    if obj == sympy.S.EmptySet:
        return Canon("=set:{}", obj, relation)
    if isinstance(obj, sympy.MatrixBase):
        return _canon_matrix(obj)
    if not isinstance(obj, sympy.Expr):
        return _inexact("expr", obj)
    if obj.is_number:
        return _canon_number(obj)
    return _canon_polynomial(obj)


def _canon_equation(eq: Any) -> Canon:
    """`x = 7` answers 7 (and `(a, b) = (1, 2)` answers (1, 2)); other equations stay."""
    import sympy

    unknowns = eq.lhs.args if isinstance(eq.lhs, sympy.Tuple) else (eq.lhs,)
    if all(isinstance(u, sympy.Symbol) for u in unknowns) and not (
        eq.lhs.free_symbols & getattr(eq.rhs, "free_symbols", set())
    ):
        return _canon_sympy(eq.rhs)
    return _inexact("rel", eq)


def _canon_inequality(rel: Any) -> Canon:
    """An inequality in one variable is its solution set; others stay relations."""
    if len(rel.free_symbols) == 1:
        try:
            return _canon_sympy(rel.as_set(), relation=True)
        except (NotImplementedError, TypeError, ValueError, AttributeError):
            pass
    return _inexact("rel", rel)


def _canon_matrix(matrix: Any) -> Canon:
    children = [_canon_sympy(entry) for entry in matrix]
    body = f"{matrix.rows}x{matrix.cols}(" + "|".join(c.key for c in children) + ")"
    return _combine("mat", body, children, matrix)


def _canon_number(expr: Any) -> Canon:
    """A number keyed by its exact value (see KEY_DIGITS, EXACT_RATIONAL_LIMIT)."""
    import sympy

    if _explosive(expr):
        return Canon("=expr:" + sympy.srepr(expr), expr)  # compared by structure only
    if not expr.is_Rational and expr.is_rational:  # an unevaluated 2^{100}
        expr = expr.doit()
    if expr.is_Rational and max(abs(expr.p), expr.q) > EXACT_RATIONAL_LIMIT:
        return Canon(f"=num:{expr.p}/{expr.q}", expr)
    if expr in (sympy.oo, -sympy.oo):
        return Canon("=num:" + ("inf" if expr == sympy.oo else "-inf"), expr)
    try:
        real, imag = sympy.N(expr, KEY_DIGITS + 10).as_real_imag()
        real_digits, imag_digits = _digits(real), _digits(imag)
    except (TypeError, ValueError, ArithmeticError):
        return _inexact("expr", expr)
    if real_digits is None or imag_digits is None:
        return _inexact("expr", expr)
    key = real_digits if imag_digits == "0" else f"{real_digits}{imag_digits}i"
    return Canon("=num:" + key, expr)


def _digits(value: Any) -> str | None:
    """KEY_DIGITS significant digits of a real sympy number; None if it is not finite."""
    import sympy

    if not value.is_Number or value in (sympy.oo, -sympy.oo, sympy.nan, sympy.zoo):
        return None
    if value == 0:
        return "0"
    number = Decimal(str(sympy.Float(value, KEY_DIGITS + 10)))
    text = f"{number:.{KEY_DIGITS - 1}e}"
    return text if text.startswith("-") else "+" + text


def _canon_polynomial(expr: Any) -> Canon:
    """A polynomial by its terms (so `(x+1)^2` is `x^2+2x+1`); other expressions stay."""
    import sympy

    try:
        symbols = sorted(expr.free_symbols, key=str)
        if not expr.is_polynomial(*symbols):
            return _inexact("expr", expr)
        poly = sympy.Poly(expr, *symbols)
        used = [s for i, s in enumerate(symbols) if any(m[i] for m, _ in poly.terms())]
        if not used:  # x^0, x - x + 2
            return _canon_number(poly.as_expr())
        terms = sympy.Poly(poly.as_expr(), *used).terms()
    except (sympy.PolynomialError, TypeError, ValueError):
        return _inexact("expr", expr)
    coefficients = [_canon_number(coefficient) for _, coefficient in terms]
    if not all(is_exact(c.key) and key_kind(c.key) == "num" for c in coefficients):
        return _inexact("expr", expr)
    names = ",".join(str(s) for s in used)
    body = ";".join(f"{m}:{c.key}" for (m, _), c in zip(terms, coefficients, strict=True))
    return Canon(f"=poly:{names}{{{body}}}", expr)


def _explosive(expr: Any) -> bool:
    """Towers like 10^{10^{10}}: evaluating them would not finish, so compare structure."""
    import sympy

    for power in expr.atoms(sympy.Pow):
        exponent = power.exp
        if exponent.has(sympy.Pow) and not exponent.is_Rational:
            return True
        if exponent.is_Integer and abs(int(exponent)) > 10_000:
            return True
    return False


def canonical_key(answer: str) -> str:
    """The canonical key of a normalised answer (what the grader caches)."""
    return canonical(answer).key


def check_pair(a: str, b: str) -> bool:
    """Symmetric equivalence of two normalised answers whose keys cannot decide:
    math-verify must accept the pair in both orders."""
    from math_verify import verify

    canon_a, canon_b = canonical(a), canonical(b)
    if canon_a.key == canon_b.key:
        return True
    if not needs_check(canon_a.key, canon_b.key) or canon_a.obj is None or canon_b.obj is None:
        return False
    both = [canon_a.obj], [canon_b.obj]
    return bool(verify(*both, timeout_seconds=None) and verify(*both[::-1], timeout_seconds=None))


def decide(a: str, b: str) -> tuple[str, str, bool]:
    """Keys of two normalised answers and whether they are equivalent, in one call."""
    return canonical_key(a), canonical_key(b), check_pair(a, b)


def equivalent(gold: str, prediction: str) -> bool:
    """The grader's equivalence of two raw answer strings, entirely in this process."""
    a, b = normalize_answer(gold), normalize_answer(prediction)
    return bool(a and b) and (a == b or check_pair(a, b))


def warm_up() -> bool:
    """Import sympy and math-verify and walk the LaTeX parser through common shapes,
    so that the first real answers of each shape are not the slow ones."""
    for form in _WARM_UP_FORMS:
        canonical(form)
    return equivalent("\\frac{1}{2}", "0.5")


def start_worker() -> None:
    """Pool initializer: warm up before the first task. A worker whose warm-up fails still
    takes tasks (each then fails or succeeds on its own) rather than exiting, which the
    pool would answer by starting another that fails alike."""
    try:
        warm_up()
    except Exception:  # any failure here only makes the first task slower
        logging.getLogger(__name__).exception("grading worker warm-up failed")


def worker_pid() -> int:
    """Which worker ran the task, after a pause that lets another idle worker take the
    next one (see `MathGrader.warm_up`)."""
    import os
    import time

    time.sleep(0.05)
    return os.getpid()
