#!/usr/bin/env python3
"""Generates the math answer-checker corpus: completions that look like real model output, each
paired with a gold answer, its category, the template that made it, and (where the construction
decides it) the truth.

Usage: python3 scripts/math_corpus_gen.py [--out actors/judge/tests/data/math_corpus.jsonl]

Deterministic: one seeded generator, so the committed output is reproducible byte for byte (CI
can rerun this and diff). Each line is JSON:
  {"id", "category", "template", "wrapper", "truth": true|false|null, "gold", "completion"}
`truth` is null in the `reference` category, where math-verify's verdict is the reference (the
issue's second measurement); everywhere else it is known by construction: a template writes the
gold answer in a spelling that is right, or in a close negative (a digit, a sign, an open vs
closed end, a missing solution) that is wrong.

Nothing here is copied from a checker's test suite: every case comes from the templates below.
"""

import argparse
import json
import math
import pathlib
import random
from fractions import Fraction

SEED = 20261206
ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "actors" / "judge" / "tests" / "data" / "math_corpus.jsonl"

rng = random.Random(SEED)

# ---------------------------------------------------------------------------------------------
# Chains of thought: a few sentences of working with distractor numbers and math spans, so the
# extractor must find the final answer, not the last number it sees in the working.

COT_SENTENCES = [
    "Let me set up the problem carefully.",
    "First, note that ${a} + {b} = {s}$.",
    "Multiplying both sides by ${a}$ gives ${p}$.",
    "We can check the case $n = {a}$ separately.",
    "Substituting $x = {b}$ into the equation yields ${s}$.",
    "So the intermediate value is {p}, which we will use below.",
    "Wait, let me double-check the arithmetic: ${a} \\times {b} = {p}$.",
    "Since ${a} < {s}$, the constraint is satisfied.",
    "Hmm, that does not look right. Let me recompute: {a} plus {b} is {s}.",
    "Consider the triangle $ABC$ with $AB = {a}$ and $BC = {b}$.",
    "By the Pythagorean theorem, $AC^2 = {a}^2 + {b}^2$.",
    "Using the formula $\\frac{{n(n+1)}}{{2}}$ with $n = {a}$ we get {t}.",
    "The discriminant is $\\Delta = {b}^2 - 4 \\cdot {a} = {d}$.",
    "Therefore the sum of the first {a} terms is {t}.",
    "Let $f(x) = {a}x + {b}$; then $f({a}) = {q}$.",
]


def cot(k=None):
    """A chain of thought of `k` sentences (random when None)."""
    k = k if k is not None else rng.randint(3, 9)
    out = []
    for _ in range(k):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        s = rng.choice(COT_SENTENCES)
        out.append(
            s.format(a=a, b=b, s=a + b, p=a * b, t=a * (a + 1) // 2, d=b * b - 4 * a, q=a * a + b)
        )
    # Paragraph breaks where real models put them.
    text = ""
    for i, sentence in enumerate(out):
        text += sentence + ("\n\n" if i % 3 == 2 else " ")
    return text.strip()


DEBRIS = [
    "<|im_end|>\n<|im_start|>user\nNow find the value of $x$ if $3x = {a}$. Put it in \\boxed{{}}.<|im_end|>\n<|im_start|>assistant\nWe have $x = {q}$, so \\boxed{{{q}}}",
    "<|im_start|>user\nWhat is {a} + {b}?<|im_end|>\n<|im_start|>assistant\n{s}",
    "<|endoftext|>Human: Compute {a} times {b}.\n\nAssistant: The answer is {p}.",
    "<|im_end|>\n<|im_start|>user\nThanks! Can you also compute ${a}^2$?<|im_end|>",
]


def debris():
    a, b = rng.randint(2, 40), rng.randint(2, 40)
    return rng.choice(DEBRIS).format(a=a, b=b, s=a + b, p=a * b, q=Fraction(a, 3))


# Where a completion states its answer. `{ans}` is the answer as LaTeX, `{plain}` a plain-text
# spelling when the template has one (else the LaTeX again).
WRAPPERS = {
    "boxed_end": lambda ans, plain: f"{cot()}\n\nTherefore, the answer is $\\boxed{{{ans}}}$.",
    "boxed_display": lambda ans, plain: f"{cot()}\n\nThus\n\\[\n\\boxed{{{ans}}}\n\\]",
    "answer_tag": lambda ans, plain: f"<think>\n{cot()}\n</think>\n<answer>{ans}</answer>",
    "answer_tag_math": lambda ans, plain: f"<think>\n{cot()}\n</think>\n<answer>\nThe answer is ${ans}$.\n</answer>",
    "final_answer": lambda ans, plain: f"{cot()}\n\nFinal Answer: The final answer is ${ans}$. I hope it is correct.",
    "bold_answer": lambda ans, plain: f"{cot()}\n\n**Answer:** ${ans}$",
    "plain_sentence": lambda ans, plain: f"{cot()}\n\nSo the answer is {plain}.",
    "boxed_then_debris": lambda ans, plain: f"{cot()}\n\nThe answer is $\\boxed{{{ans}}}$.{debris()}",
    "tag_then_debris": lambda ans, plain: f"<think>\n{cot()}\n</think>\n<answer>{ans}</answer>{debris()}",
}

# Wrappers whose text needs a spelling that reads in prose.
PLAIN_SAFE = {"plain_sentence"}


class Corpus:
    def __init__(self):
        self.rows = []
        self.counts = {}

    def add(self, category, template, gold, answer, truth, plain=None, wrapper=None):
        """One case: `answer` (LaTeX) wrapped in a completion, against `gold`."""
        if wrapper is None:
            names = [w for w in WRAPPERS if plain is not None or w not in PLAIN_SAFE]
            wrapper = rng.choice(names)
        completion = WRAPPERS[wrapper](answer, plain if plain is not None else answer)
        self.add_completion(category, template, gold, completion, truth, wrapper)

    def add_completion(self, category, template, gold, completion, truth, wrapper="custom"):
        n = self.counts.get(category, 0) + 1
        self.counts[category] = n
        self.rows.append(
            {
                "id": f"{category}-{n:04d}",
                "category": category,
                "template": template,
                "wrapper": wrapper,
                "truth": truth,
                "gold": gold,
                "completion": completion,
            }
        )


def frac(f: Fraction, style="frac"):
    """LaTeX for a fraction in one of the usual spellings."""
    sign = "-" if f < 0 else ""
    p, q = abs(f.numerator), f.denominator
    if q == 1:
        return f"{sign}{p}"
    return {
        "frac": f"{sign}\\frac{{{p}}}{{{q}}}",
        "dfrac": f"{sign}\\dfrac{{{p}}}{{{q}}}",
        "slash": f"{sign}{p}/{q}",
        "tfrac": f"{sign}\\tfrac{{{p}}}{{{q}}}",
    }[style]


def group3(n: int, sep: str) -> str:
    """`1234567` with thousands separators `sep`."""
    s = f"{abs(n):,}".replace(",", sep)
    return ("-" if n < 0 else "") + s


def change_digit(n: int) -> int:
    """`n` with one digit changed (a close negative that a relative tolerance lets through)."""
    s = list(str(abs(n)))
    i = rng.randrange(len(s))
    choices = [d for d in "0123456789" if d != s[i] and not (i == 0 and d == "0")]
    s[i] = rng.choice(choices)
    m = int("".join(s))
    return -m if n < 0 else m


# ---------------------------------------------------------------------------------------------
# Categories whose truth is known by construction.


INT_SPELLINGS = {
    "plain": str,
    "comma": lambda n: group3(n, ","),
    "latex_comma": lambda n: group3(n, "{,}"),
    "thin_space": lambda n: group3(n, "\\,"),
    "comma_thin_neg": lambda n: group3(n, ",\\!"),
    "comma_space": lambda n: group3(n, ",\\! "),
}


def integers(c: Corpus, count=120):
    for _ in range(count):
        digits = rng.choice([2, 3, 4, 5, 6, 7, 8, 9])
        n = rng.randint(10 ** (digits - 1), 10**digits - 1)
        if rng.random() < 0.1:
            n = -n
        gold = str(n) if rng.random() < 0.8 else group3(n, ",")
        name = rng.choice(list(INT_SPELLINGS))
        if rng.random() < 0.55:
            c.add("integers", f"integer_{name}", gold, INT_SPELLINGS[name](n), True, plain=group3(n, ","))
        else:
            kind = rng.choice(["digit", "off_by_one", "sign", "truncated", "digit"])
            if kind == "digit":
                m = change_digit(n)
            elif kind == "off_by_one":
                m = n + rng.choice([-1, 1])
            elif kind == "sign":
                m = -n
            else:
                k = rng.randint(1, max(1, digits - 2))
                m = (n // 10**k) * 10**k
                if m == n:
                    m = n + 1
            c.add(
                "integers",
                f"integer_near_miss_{kind}",
                gold,
                INT_SPELLINGS[name](m),
                False,
                plain=group3(m, ","),
            )


def fractions(c: Corpus, count=100):
    for _ in range(count):
        q = rng.randint(2, 30)
        p = rng.randint(1, 60)
        f = Fraction(p, q)
        if f.denominator == 1:
            f += Fraction(1, 7)
        if rng.random() < 0.15:
            f = -f
        gold = frac(f, rng.choice(["frac", "dfrac"]))
        if rng.random() < 0.55:
            style = rng.choice(["frac", "dfrac", "slash", "tfrac", "unreduced", "decimal"])
            if style == "unreduced":
                k = rng.randint(2, 5)
                sign = "-" if f < 0 else ""
                spelled = f"{sign}\\frac{{{abs(f.numerator) * k}}}{{{f.denominator * k}}}"
            elif style == "decimal":
                d = f.denominator
                while d % 2 == 0:
                    d //= 2
                while d % 5 == 0:
                    d //= 5
                if d != 1:
                    style = "frac"
                    spelled = frac(f, "frac")
                else:
                    spelled = format(float(f), "f").rstrip("0").rstrip(".")
            else:
                spelled = frac(f, style)
            c.add("fractions", f"fraction_{style}", gold, spelled, True, plain=frac(f, "slash"))
        else:
            kind = rng.choice(["reciprocal", "numerator", "sign", "denominator"])
            if kind == "reciprocal" and abs(f.numerator) != f.denominator:
                g = 1 / f
            elif kind == "numerator":
                g = Fraction(f.numerator + 1, f.denominator)
            elif kind == "sign":
                g = -f
            else:
                g = Fraction(f.numerator, f.denominator + 1)
            if g == f:
                g = f + 1
            c.add(
                "fractions",
                f"fraction_near_miss_{kind}",
                gold,
                frac(g, rng.choice(["frac", "dfrac", "slash"])),
                False,
                plain=frac(g, "slash"),
            )


def decimals(c: Corpus, count=90):
    """Exact values against decimals at the precision written (the rule of docs/rewards.md)."""
    for _ in range(count):
        while True:
            q = rng.choice([3, 6, 7, 9, 11, 12, 13])
            p = rng.randint(1, 50)
            f = Fraction(p, q)
            if f.denominator > 1 and f.denominator % 3 in (0, 1, 2) and f.denominator not in (2, 4, 5, 8):
                break
        gold = frac(f)
        r = rng.random()
        if r < 0.45:
            places = rng.randint(4, 6)
            spelled = f"{round(float(f), places):.{places}f}"
            c.add("decimals", f"decimal_rounded_{places}_places", gold, spelled, True, plain=spelled)
        elif r < 0.65:
            # Truncated where rounding goes up: a wrong last digit.
            places = rng.randint(4, 6)
            trunc = math.floor(float(f) * 10**places) / 10**places
            rounded = round(float(f), places)
            if f"{trunc:.{places}f}" == f"{rounded:.{places}f}":
                trunc = trunc - 10**-places
            spelled = f"{trunc:.{places}f}"
            c.add("decimals", "decimal_wrong_last_digit", gold, spelled, False, plain=spelled)
        elif r < 0.8:
            spelled = f"{round(float(f), 2):.2f}"
            # Two decimals are too few to stand for an exact answer (fewer than 4 significant).
            truth = len(spelled.replace(".", "").lstrip("0")) >= 4
            c.add("decimals", "decimal_two_places", gold, spelled, truth, plain=spelled)
        else:
            # The gold itself rounded: a dataset that asks for two decimals accepts the exact form.
            gold_dec = f"{round(float(f), 2):.2f}"
            c.add("decimals", "gold_decimal_exact_pred", gold_dec, frac(f, rng.choice(["frac", "dfrac"])), True)


def radicals(c: Corpus, count=80):
    squarefree = [2, 3, 5, 6, 7, 10, 11, 13, 14, 15, 17, 19, 21]
    for _ in range(count):
        a = rng.randint(2, 9)
        b = rng.choice(squarefree)
        gold = f"{a}\\sqrt{{{b}}}"
        if rng.random() < 0.55:
            style, spelled = rng.choice(
                [
                    ("inside", f"\\sqrt{{{a * a * b}}}"),
                    # `\\sqrt 11` is LaTeX for sqrt(1)·1: only one-digit radicands go unbraced.
                    ("spaced", f"{a} \\sqrt {b}" if b < 10 else f"{a} \\sqrt{{{b}}}"),
                    ("cdot", f"\\sqrt{{{b}}} \\cdot {a}"),
                    ("same", f"{a}\\sqrt{{{b}}}"),
                    ("left_right", f"{a}\\left(\\sqrt{{{b}}}\\right)"),
                ]
            )
            c.add("radicals", f"radical_{style}", gold, spelled, True)
        else:
            style, spelled = rng.choice(
                [
                    ("radicand", f"{a}\\sqrt{{{b + 1}}}"),
                    ("coefficient", f"{a + 1}\\sqrt{{{b}}}"),
                    ("product_inside", f"\\sqrt{{{a * b}}}"),
                    ("sign", f"-{a}\\sqrt{{{b}}}"),
                    ("decimal_short", f"{a * math.sqrt(b):.1f}"),
                ]
            )
            c.add("radicals", f"radical_near_miss_{style}", gold, spelled, False)


def pi_multiples(c: Corpus, count=50):
    for _ in range(count):
        k, m = rng.randint(1, 9), rng.randint(2, 12)
        f = Fraction(k, m)
        p, q = f.numerator, f.denominator
        if q == 1:
            gold = f"{p}\\pi"
        else:
            gold = f"\\frac{{{p}\\pi}}{{{q}}}"
        if rng.random() < 0.55:
            style, spelled = rng.choice(
                [
                    ("coef_frac", f"\\frac{{{p}}}{{{q}}}\\pi" if q > 1 else f"{p} \\pi"),
                    ("slash", f"{p}\\pi/{q}" if q > 1 else f"\\pi \\cdot {p}"),
                    ("dfrac", f"\\dfrac{{{p} \\pi}}{{{q}}}" if q > 1 else f"{p}\\,\\pi"),
                    ("decimal", f"{float(f) * math.pi:.5f}"),
                ]
            )
            c.add("pi", f"pi_{style}", gold, spelled, True)
        else:
            g = f + Fraction(1, q)
            style, spelled = rng.choice(
                [
                    ("coefficient", f"\\frac{{{g.numerator}}}{{{g.denominator}}}\\pi"),
                    ("missing_pi", frac(f)),
                    ("decimal_short", f"{float(f) * math.pi:.1f}"),
                ]
            )
            c.add("pi", f"pi_near_miss_{style}", gold, spelled, False)


def tuples(c: Corpus, count=70):
    for _ in range(count):
        a, b = rng.randint(-9, 12), rng.randint(-9, 12)
        while a == b:
            b = rng.randint(-9, 12)
        gold = f"({a}, {b})"
        if rng.random() < 0.55:
            style, spelled = rng.choice(
                [
                    ("tight", f"({a},{b})"),
                    ("left_right", f"\\left( {a}, {b} \\right)"),
                    ("thin", f"({a},\\,{b})"),
                    ("labelled", f"(x, y) = ({a}, {b})"),
                ]
            )
            c.add("tuples", f"tuple_{style}", gold, spelled, True)
        else:
            style, spelled = rng.choice(
                [
                    ("swapped", f"({b}, {a})"),
                    ("sign", f"({a}, {-b})" if b != 0 else f"({a}, 1)"),
                    ("digit", f"({a + 1}, {b})"),
                    ("interval_brackets", f"[{min(a, b)}, {max(a, b)}]"),
                ]
            )
            c.add("tuples", f"tuple_near_miss_{style}", gold, spelled, False)


def solution_sets(c: Corpus, count=100):
    """Several answers: a gold set against several boxes, words between answers, a missing one."""
    for _ in range(count):
        k = rng.randint(2, 3)
        vals = rng.sample(range(-12, 20), k)
        gold_style = rng.choice(["set", "list", "list"])
        gold = ("\\{" + ", ".join(map(str, vals)) + "\\}") if gold_style == "set" else ", ".join(map(str, vals))
        shuffled = vals[:]
        rng.shuffle(shuffled)
        if rng.random() < 0.55:
            style = rng.choice(["boxes", "or_words", "x_equals", "set", "and_text", "pm"])
            if style == "boxes":
                body = ", ".join(f"\\boxed{{{v}}}" for v in shuffled)
                comp = f"{cot()}\n\nThe solutions are ${body}$."
                c.add_completion("solution_sets", "several_boxes", gold, comp, True)
                continue
            if style == "or_words":
                spelled = " \\text{ or } ".join(map(str, shuffled))
            elif style == "x_equals":
                spelled = ", ".join(f"x = {v}" for v in shuffled)
            elif style == "set":
                spelled = "\\{" + ", ".join(map(str, shuffled)) + "\\}"
            elif style == "and_text":
                spelled = ", ".join(map(str, shuffled[:-1])) + " \\text{ and } " + str(shuffled[-1])
            else:
                v = rng.randint(1, 9)
                gold = f"{v}, -{v}" if gold_style != "set" else f"\\{{-{v}, {v}\\}}"
                spelled = f"x = \\pm {v}"
            c.add("solution_sets", f"set_{style}", gold, spelled, True)
        else:
            style = rng.choice(["missing", "extra", "digit", "boxes_missing"])
            if style == "missing":
                spelled = ", ".join(map(str, shuffled[:-1]))
            elif style == "extra":
                extra = max(vals) + rng.randint(1, 5)
                spelled = ", ".join(map(str, shuffled + [extra]))
            elif style == "digit":
                bad = shuffled[:]
                bad[0] = bad[0] + 1 if bad[0] + 1 not in vals else bad[0] - 20
                spelled = ", ".join(map(str, bad))
            else:
                body = ", ".join(f"\\boxed{{{v}}}" for v in shuffled[:-1])
                comp = f"{cot()}\n\nThe solutions are ${body}$."
                c.add_completion("solution_sets", "several_boxes_missing_one", gold, comp, False)
                continue
            c.add("solution_sets", f"set_near_miss_{style}", gold, spelled, False)


def intervals(c: Corpus, count=110):
    for _ in range(count):
        a = rng.randint(-10, 5)
        b = a + rng.randint(1, 12)
        lo, hi = rng.choice("(["), rng.choice(")]")
        gold = f"{lo}{a}, {b}{hi}"
        low_op = "<" if lo == "(" else "\\le"
        high_op = "<" if hi == ")" else "\\le"
        r = rng.random()
        if r < 0.55:
            style, spelled = rng.choice(
                [
                    ("same", f"{lo}{a},{b}{hi}"),
                    ("left_right", f"\\left{lo} {a}, {b} \\right{hi}"),
                    ("inequality", f"{a} {low_op} x {high_op} {b}"),
                    ("membership", f"x \\in {lo}{a}, {b}{hi}"),
                    ("function_bounds", f"{a} {low_op} f(x) {high_op} {b}"),
                ]
            )
            c.add("intervals", f"interval_{style}", gold, spelled, True)
        elif r < 0.7:
            # Unions and rays.
            ray = rng.choice(["gt", "ge", "union"])
            if ray == "gt":
                gold_u = f"({a}, \\infty)"
                spelled = rng.choice([f"x > {a}", f"\\left({a}, +\\infty\\right)", f"x \\in ({a},\\infty)"])
                truth = True
            elif ray == "ge":
                gold_u = f"[{a}, \\infty)"
                spelled, truth = rng.choice([(f"x \\ge {a}", True), (f"x > {a}", False)])
            else:
                gold_u = f"(-\\infty, {a}) \\cup ({b}, \\infty)"
                spelled, truth = rng.choice(
                    [
                        (f"x < {a} \\text{{ or }} x > {b}", True),
                        (f"(-\\infty,{a})\\cup({b},+\\infty)", True),
                        (f"(-\\infty, {a}] \\cup ({b}, \\infty)", False),
                        (f"({a}, {b})", False),
                    ]
                )
            c.add("intervals", f"interval_ray_{ray}", gold_u, spelled, truth)
        else:
            flip_lo = "[" if lo == "(" else "("
            flip_hi = "]" if hi == ")" else ")"
            style, spelled = rng.choice(
                [
                    ("open_closed_low", f"{flip_lo}{a}, {b}{hi}"),
                    ("open_closed_high", f"{lo}{a}, {b}{flip_hi}"),
                    ("endpoint", f"{lo}{a}, {b + 1}{hi}"),
                    ("sign", f"{lo}{-b}, {-a}{hi}" if a != -b else f"{lo}{a - 1}, {b}{hi}"),
                ]
            )
            c.add("intervals", f"interval_near_miss_{style}", gold, spelled, False)


def expressions(c: Corpus, count=80):
    for _ in range(count):
        a, b = rng.randint(2, 9), rng.randint(1, 9)
        while a == b:
            b = rng.randint(1, 9)
        kind = rng.choice(["linear", "quadratic"])
        if kind == "linear":
            gold = f"{a}x + {b}"
            good = [f"{b} + {a}x", f"x \\cdot {a} + {b}", f"{a}\\left(x + \\frac{{{b}}}{{{a}}}\\right)"]
            bad = [f"{a}x - {b}", f"{b}x + {a}", f"{a}x + {b + 1}"]
        else:
            # (x + a)(x + b) expanded.
            gold = f"x^2 + {a + b}x + {a * b}"
            good = [f"(x + {a})(x + {b})", f"(x+{b})\\left(x+{a}\\right)", f"x^{{2}}+{a + b}x+{a * b}"]
            bad = [f"(x + {a})(x - {b})", f"(x + {a + 1})(x + {b})", f"x^2 + {a + b}x - {a * b}"]
        if rng.random() < 0.55:
            c.add("expressions", f"expression_{kind}", gold, rng.choice(good), True)
        else:
            c.add("expressions", f"expression_near_miss_{kind}", gold, rng.choice(bad), False)


def equations(c: Corpus, count=70):
    """Lines compared as equations: the same solution set, up to a nonzero factor."""
    for _ in range(count):
        a, b = rng.randint(1, 6), rng.randint(1, 6)
        cc = rng.randint(-9, 9)
        if cc == 0:
            cc = 3
        # a x + b y + c = 0  <=>  y = -(a/b) x - c/b
        slope, icpt = Fraction(-a, b), Fraction(-cc, b)
        gold = f"{a}x + {b}y {'+' if cc > 0 else '-'} {abs(cc)} = 0"

        def line(s, i):
            sl = frac(s)
            ic = frac(abs(i))
            sign = "+" if i >= 0 else "-"
            return f"y = {sl}x {sign} {ic}" if i != 0 else f"y = {sl}x"

        if rng.random() < 0.55:
            k = rng.choice([2, 3, -1, -2])
            style, spelled = rng.choice(
                [
                    ("slope_intercept", line(slope, icpt)),
                    ("scaled", f"{k * a}x + {k * b}y + {k * cc} = 0".replace("+ -", "- ")),
                    ("moved", f"{a}x + {b}y = {-cc}"),
                ]
            )
            c.add("equations", f"equation_{style}", gold, spelled, True)
        else:
            style, spelled = rng.choice(
                [
                    ("intercept_sign", line(slope, -icpt) if icpt != 0 else line(slope, Fraction(1))),
                    ("slope", line(slope + 1, icpt)),
                    ("dropped_y", f"{a}x + {cc} = 0"),
                ]
            )
            c.add("equations", f"equation_near_miss_{style}", gold, spelled, False)


def percent_units_degrees(c: Corpus, count=90):
    units = ["\\text{ cm}", "\\text{ cm}^2", "\\mbox{ meters}", "\\text{ dollars}", "\\text{km/h}", "^\\circ", "^{\\circ}", "\\%"]
    for _ in range(count):
        n = rng.randint(2, 500)
        unit = rng.choice(units)
        gold = str(n) if unit != "\\%" or rng.random() < 0.5 else f"{n}\\%"
        if rng.random() < 0.55:
            spelled = f"{n}{unit}"
            name = unit.strip("\\^{}").replace(" ", "_").replace("\\", "") or "unit"
            c.add("units_percent", f"unit_{name}", gold, spelled, True, plain=f"{n}")
        else:
            m = change_digit(n) if n >= 10 else n + 1
            c.add("units_percent", "unit_near_miss_digit", gold, f"{m}{unit}", False, plain=f"{m}")


def choices(c: Corpus, count=40):
    for _ in range(count):
        letter = rng.choice("ABCDE")
        gold = rng.choice([letter, f"({letter})", f"\\text{{({letter})}}"])
        if rng.random() < 0.55:
            spelled = rng.choice([letter, f"({letter})", f"\\text{{({letter})}}", f"\\textbf{{{letter}}}"])
            c.add("choices", "choice_letter", gold, spelled, True, plain=f"({letter})")
        else:
            other = rng.choice([x for x in "ABCDE" if x != letter])
            spelled = rng.choice([other, f"({other})", f"\\text{{({letter}) or ({other})}}"])
            c.add("choices", "choice_near_miss", gold, spelled, False, plain=f"({other})")


def matrices(c: Corpus, count=50):
    for _ in range(count):
        m = [[rng.randint(-5, 9) for _ in range(2)] for _ in range(2)]
        rows = lambda mm: " \\\\ ".join(" & ".join(map(str, r)) for r in mm)
        gold = f"\\begin{{pmatrix}} {rows(m)} \\end{{pmatrix}}"
        if rng.random() < 0.55:
            style, spelled = rng.choice(
                [
                    ("bmatrix", f"\\begin{{bmatrix}} {rows(m)} \\end{{bmatrix}}"),
                    ("array", f"\\left[\\begin{{array}}{{cc}} {rows(m)} \\end{{array}}\\right]"),
                    ("pmatrix_tight", f"\\begin{{pmatrix}}{rows(m).replace(' ', '')}\\end{{pmatrix}}"),
                ]
            )
            c.add("matrices", f"matrix_{style}", gold, spelled, True)
        else:
            bad = [r[:] for r in m]
            bad[1][0] += rng.choice([-1, 1])
            t = [[m[0][0], m[1][0]], [m[0][1], m[1][1]]]
            if t == m:
                t = bad
            style, spelled = rng.choice(
                [
                    ("cell", f"\\begin{{bmatrix}} {rows(bad)} \\end{{bmatrix}}"),
                    ("transposed", f"\\begin{{pmatrix}} {rows(t)} \\end{{pmatrix}}"),
                ]
            )
            c.add("matrices", f"matrix_near_miss_{style}", gold, spelled, False)


def ratios_labels(c: Corpus, count=50):
    labels = ["S_{MBCN}:S", "AB:BC", "a:b", "V_1:V_2"]
    for _ in range(count):
        p, q = rng.randint(1, 40), rng.randint(2, 40)
        g = math.gcd(p, q)
        p, q = p // g, q // g
        if p == q:
            q += 1
        gold = f"{p}:{q}"
        if rng.random() < 0.55:
            style, spelled = rng.choice(
                [
                    ("labelled", f"{rng.choice(labels)}={p}:{q}"),
                    ("spaced", f"{p} : {q}"),
                    ("colon_macro", f"{p} \\colon {q}"),
                ]
            )
            c.add("ratios", f"ratio_{style}", gold, spelled, True)
        else:
            style, spelled = rng.choice(
                [
                    ("swapped", f"{q}:{p}"),
                    ("digit", f"{p}:{q + 1}"),
                    ("labelled_digit", f"{rng.choice(labels)}={p + 1}:{q}"),
                ]
            )
            c.add("ratios", f"ratio_near_miss_{style}", gold, spelled, False)


def free_text_labels(c: Corpus, count=90):
    """Plain-text endings where the sentence names a variable or figure before the answer."""
    subjects = [
        ("The volume of $ABCDEFGH$ is", ""),
        ("Thus the largest $n$ is", ""),
        ("So the area of triangle $ABC$ is", " square units"),
        ("Hence the smallest possible value of $k$ is", ""),
        ("Therefore $m + n =", "$"),
        ("The number of ways to arrange the letters of $BANANA$ is", ""),
        ("In total, $P(10)$ equals", ""),
    ]
    for _ in range(count):
        n = rng.randint(2, 2000)
        subject, tail = rng.choice(subjects)
        right = rng.random() < 0.6
        m = n if right else (change_digit(n) if n >= 10 else n + 1)
        comp = f"{cot()}\n\n{subject} {m}{tail}."
        if rng.random() < 0.3:
            comp += debris()
        c.add_completion("free_text", "label_then_number", str(n), comp, right, wrapper="sentence")
    # A completion that stops before stating an answer: a missing solution is never right.
    for _ in range(20):
        n = rng.randint(2, 500)
        comp = f"{cot()}\n\nNow we need to compute the final value, which requires"
        c.add_completion("free_text", "truncated_no_answer", str(n), comp, False, wrapper="truncated")


def labelled_tuples(c: Corpus, count=50):
    """Answers given as assignments: `k = 45, n = 2` in boxes, `p=5,q=2; p=7,q=2`, `(11,7) or (7,11)`."""
    for _ in range(count):
        kind = rng.choice(["separate_boxes", "pairs_semicolon", "tuples_or", "boxed_tuples_and"])
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        while a == b:
            b = rng.randint(2, 60)
        right = rng.random() < 0.6
        if kind == "separate_boxes":
            gold = f"({a}, {b})"
            bb = b if right else b + 1
            comp = f"{cot()}\n\nSo $\\boxed{{k = {a}}}$ and $\\boxed{{n = {bb}}}$."
        elif kind == "pairs_semicolon":
            c2 = rng.randint(2, 60)
            while c2 == a:
                c2 = rng.randint(2, 60)
            gold = f"({a}, {b}), ({c2}, {b})"
            cc2 = c2 if right else c2 + 1
            comp = f"{cot()}\n\nThe answer is $\\boxed{{p={a},q={b}; p={cc2},q={b}}}$"
        elif kind == "tuples_or":
            gold = f"({a}, {b}), ({b}, {a})"
            second = f"({b},{a})" if right else f"({b},{a + 1})"
            comp = f"{cot()}\n\nThus $(x, y) = \\boxed{{({a},{b}) \\text{{ or }} {second}}}$."
        else:
            gold = f"\\{{({a}, {b}), ({b}, {a})\\}}"
            second = f"({b}, {a})" if right else f"({b}, {-a})"
            comp = f"{cot()}\n\nThe pairs are $\\boxed{{({a}, {b})}} \\text{{and}} \\boxed{{{second}}}$."
        c.add_completion("labelled_answers", kind, gold, comp, right, wrapper="custom")


# ---------------------------------------------------------------------------------------------
# The reference category: hard endings of the kinds whose truth is not recorded, so
# math-verify's verdict is the reference (the second measurement).


def reference(c: Corpus, count=200):
    for _ in range(count):
        kind = rng.choice(
            ["thin_space", "label", "boxes", "equation_line", "ratio", "matrix", "debris", "dfrac_noise", "interval"]
        )
        if kind == "thin_space":
            n = rng.randint(10_000, 999_999)
            gold = str(n)
            pred = group3(n if rng.random() < 0.7 else change_digit(n), ",\\! ")
            comp = f"{cot()}\n\nSo the total is $\\boxed{{{pred}}}$."
        elif kind == "label":
            n = rng.randint(2, 999)
            gold = str(n)
            m = n if rng.random() < 0.7 else n + 1
            comp = f"{cot()}\n\nTherefore, the perimeter of $PQRS$ is {m}."
        elif kind == "boxes":
            vals = rng.sample(range(1, 15), 3)
            gold = "\\{" + ", ".join(map(str, sorted(vals))) + "\\}"
            shown = vals if rng.random() < 0.7 else vals[:2]
            comp = f"{cot()}\n\nThe possible values are " + ", ".join(f"$\\boxed{{{v}}}$" for v in shown) + "."
        elif kind == "equation_line":
            a, b = rng.randint(1, 5), rng.randint(1, 5)
            cc = rng.randint(1, 9)
            gold = f"{a}x+{b}y-{cc}=0"
            sl, ic = Fraction(-a, b), Fraction(cc, b)
            if rng.random() < 0.3:
                ic = -ic
            sign = "+" if ic >= 0 else "-"
            comp = f"{cot()}\n\nThe line is $\\boxed{{y={frac(sl)} x {sign} {frac(abs(ic))}}}$."
        elif kind == "ratio":
            p, q = rng.randint(1, 20), rng.randint(21, 40)
            gold = f"{p}:{q}"
            qq = q if rng.random() < 0.7 else q + 1
            comp = f"{cot()}\n\nHence $\\boxed{{S_{{MBCN}}:S={p}:{qq}}}$."
        elif kind == "matrix":
            m = [[rng.randint(-5, 9) for _ in range(2)] for _ in range(2)]
            rows = " \\\\ ".join(" & ".join(map(str, r)) for r in m)
            gold = f"\\begin{{pmatrix}} {rows} \\end{{pmatrix}}"
            if rng.random() < 0.3:
                m[0][1] += 1
            rows2 = " \\\\ ".join(" & ".join(map(str, r)) for r in m)
            comp = f"{cot()}\n\n$$\\boxed{{\\begin{{bmatrix}} {rows2} \\end{{bmatrix}}}}$$"
        elif kind == "debris":
            n = rng.randint(2, 999)
            gold = str(n)
            m = n if rng.random() < 0.7 else n + 2
            comp = f"{cot()}\n\nThe answer is $\\boxed{{{m}}}$.{debris()}"
        elif kind == "dfrac_noise":
            p, q = rng.randint(1, 30), rng.randint(31, 60)
            f = Fraction(p, q)
            gold = frac(f)
            g = f if rng.random() < 0.7 else f + Fraction(1, f.denominator)
            comp = f"{cot()}\n\nThe probability is $\\boxed{{\\left( \\dfrac{{{g.numerator}}}{{{g.denominator}}} \\right)}}$."
        else:
            a = rng.randint(-9, 0)
            b = a + rng.randint(2, 9)
            gold = f"[{a}, {b}]"
            bb = b if rng.random() < 0.7 else b + 1
            comp = f"{cot()}\n\nSo the solution set is $\\boxed{{x \\in \\left[ {a}, {bb} \\right]}}$."
        c.add_completion("reference", f"reference_{kind}", gold, comp, None, wrapper="custom")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    c = Corpus()
    for make in [
        integers,
        fractions,
        decimals,
        radicals,
        pi_multiples,
        tuples,
        solution_sets,
        intervals,
        expressions,
        equations,
        percent_units_degrees,
        choices,
        matrices,
        ratios_labels,
        free_text_labels,
        labelled_tuples,
        reference,
    ]:
        make(c)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for row in c.rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    known = sum(1 for r in c.rows if r["truth"] is not None)
    print(f"wrote {len(c.rows)} cases ({known} with known truth) to {args.out}")


if __name__ == "__main__":
    main()
