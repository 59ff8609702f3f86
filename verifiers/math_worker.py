"""Functions that run inside the grading worker processes (never on the event loop).

`math-verify` parses LaTeX into sympy and compares; sympy can take unbounded time on
adversarial input, so these run in worker processes that the pool kills on timeout.
math-verify's own timeouts (signal.alarm) are switched off: the pool enforces them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from .normalize import normalize_answer

_NUMERIC_DECIMALS = 6  # math-verify's default float rounding


def _parse(answer: str) -> list:
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled": we know
    from math_verify import parse
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    text = answer if "$" in answer else f"${answer}$"
    return parse(
        text,
        extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
        parsing_timeout=None,
    )


def canonical_key(answer: str) -> str:
    """A key such that equal keys mean equivalent answers.

    Numbers become their value rounded like math-verify rounds them (so `1/2`, `0.5` and
    `\\frac{2}{4}` share a key); other expressions their sympy structure; what does not
    parse, its normalised string; `x = 7` counts as 7. Different non-numeric keys may
    still be equivalent (an interval and a tuple): the caller checks those pairs with
    `equivalent`. A number never equals a non-numeric expression.
    """
    import sympy

    parsed = _parse(answer)
    if not parsed or not isinstance(parsed[0], sympy.Basic):
        return "str:" + normalize_answer(answer)
    expr = parsed[0]
    if isinstance(expr, sympy.Eq) and expr.lhs.is_Symbol:  # "x = 7" answers 7
        expr = expr.rhs
    if _explosive(expr):
        return "expr:" + sympy.srepr(expr)
    if expr.is_number:
        try:
            value = complex(sympy.N(expr, 15))
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            value = None
        if value is not None and math.isfinite(value.real) and math.isfinite(value.imag):
            real = round(value.real, _NUMERIC_DECIMALS) + 0.0  # folds -0.0 into 0.0
            imag = round(value.imag, _NUMERIC_DECIMALS) + 0.0
            return f"num:{real:.{_NUMERIC_DECIMALS}f}" + (
                f"{imag:+.{_NUMERIC_DECIMALS}f}i" if imag else ""
            )
    return "expr:" + sympy.srepr(expr)


def _explosive(expr) -> bool:
    """Towers like 10^{10^{10}}: evaluating them would not finish, so compare structure."""
    import sympy

    for power in expr.atoms(sympy.Pow):
        exponent = power.exp
        if exponent.has(sympy.Pow) and not exponent.is_Rational:
            return True
        if exponent.is_Integer and abs(int(exponent)) > 10_000:
            return True
    return False


def equivalent(gold: str, prediction: str) -> bool:
    """math-verify equivalence of two answer strings (order matters: gold first)."""
    import sympy
    from math_verify import verify

    gold_parsed, pred_parsed = _parse(gold), _parse(prediction)
    if not gold_parsed or not pred_parsed:
        return normalize_answer(gold) == normalize_answer(prediction)
    exprs = [p for p in (gold_parsed[0], pred_parsed[0]) if isinstance(p, sympy.Basic)]
    if any(_explosive(e) for e in exprs):
        return len(exprs) == 2 and sympy.srepr(exprs[0]) == sympy.srepr(exprs[1])
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def equivalent_pairs(pairs: Sequence[tuple[str, str]]) -> list[bool]:
    return [equivalent(a, b) for a, b in pairs]


def warm_up() -> bool:
    """Import sympy and math-verify once, so the first real check is not slow."""
    return equivalent("\\frac{1}{2}", "0.5")


def sleep_for_test(seconds: float) -> None:
    """A task that overruns on purpose: lets tests check that stuck workers are replaced."""
    import time

    time.sleep(seconds)
