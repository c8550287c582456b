"""String tensors (NumPy object arrays of str): StringConcat, StringSplit, StringNormalizer, RegexFullMatch.

RegexFullMatch takes its pattern from the model file, which is untrusted, and Python's ``re`` backtracks: a
pattern such as ``(a|aa)*b`` or ``(x+x+)+y`` takes exponential time on a short string, and ``re`` has no
timeout. So the pattern is only *parsed* with Python's parser (the RE2 syntax ONNX names is a subset of it);
features RE2 does not have (backreferences, lookaround, conditionals, possessive or atomic groups) are refused at
load, and matching runs a Thompson NFA built from the parse, one pass over the string with a set of states —
time linear in the string's length times the pattern's size, whatever the pattern. The pattern's NFA is
bounded (``MAX_NFA_STATES``, counted repetitions expanded) and every run is checked against the work budget.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .registry import NodeSpec, Op, register

try:  # Python 3.11+
    from re import _constants as sre_constants
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_constants  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

MAX_NFA_STATES = 20_000


def _strings(op: Op, x: Any, what: str = "the input") -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "OUS":
        raise op.fail(f"{what} must be a string tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dtype.kind != "O":
        x = x.astype(object)
    if not all(isinstance(v, str) for v in x.flat):
        raise op.fail(f"{what} holds values that are not strings")
    return x


def _check_text(op: Op, x: np.ndarray, factor: float = 1.0) -> int:
    """Total characters of a string tensor, refused past the tensor budget."""
    total = sum(len(v) for v in x.flat)
    op.check_size((int(total * factor) + x.size,), np.dtype("U1"), "the output strings")
    return total


@register("StringConcat", 20)
class StringConcat(Op):
    def run(self, x, y):
        x, y = _strings(self, x, "X"), _strings(self, y, "Y")
        try:
            shape = np.broadcast_shapes(x.shape, y.shape)
        except ValueError:
            raise self.fail(f"shapes {list(x.shape)} and {list(y.shape)} do not broadcast") from None
        self.check_size(shape, object)
        longest = max((len(v) for v in x.flat), default=0) + max((len(v) for v in y.flat), default=0)
        self.check_size((int(np.prod(shape, dtype=np.float64)) * longest,), np.dtype("U1"), "the output strings")
        out = np.empty(shape, dtype=object)
        bx, by = np.broadcast_to(x, shape), np.broadcast_to(y, shape)
        for index in np.ndindex(shape):
            out[index] = bx[index] + by[index]
        return out


@register("StringSplit", 20)
class StringSplit(Op):
    """Split each string at ``delimiter`` (absent or empty: at runs of whitespace, leading and trailing ignored),
    at most ``maxsplit`` times; parts padded with "" to the longest, and the part count of each string."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        delimiter = self.attr("delimiter")
        if delimiter is not None and not isinstance(delimiter, str):
            raise self.fail(f"attribute 'delimiter' must be a string, got {delimiter!r}")
        self.delimiter = delimiter or None
        maxsplit = self.attr("maxsplit")
        if maxsplit is not None and (not isinstance(maxsplit, int) or maxsplit < 0):
            raise self.fail(f"attribute 'maxsplit' must be a non-negative integer, got {maxsplit!r}")
        self.maxsplit = -1 if maxsplit is None else maxsplit

    def run(self, x):
        x = _strings(self, x)
        _check_text(self, x)
        parts = [v.split(self.delimiter, self.maxsplit) for v in x.flat]
        width = max((len(p) for p in parts), default=0)
        self.check_size(x.shape + (width,), object)
        out = np.full((x.size, width), "", dtype=object)
        for row, items in enumerate(parts):
            out[row, : len(items)] = items
        counts = np.array([len(p) for p in parts], dtype=np.int64).reshape(x.shape)
        return out.reshape(x.shape + (width,)), counts


@register("StringNormalizer", 10)
class StringNormalizer(Op):
    """Drop the stop words (whole strings, compared with or without case), then change case. Input [C] or [1, C];
    an input whose every string is dropped gives one empty string."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        self.action = self.attr("case_change_action", "NONE")
        if self.action not in ("NONE", "LOWER", "UPPER"):
            raise self.fail(f"case_change_action must be NONE, LOWER or UPPER, got {self.action!r}")
        self.case_sensitive = bool(self.attr("is_case_sensitive", 0))
        stopwords = self.attr("stopwords") or []
        if not isinstance(stopwords, list) or not all(isinstance(w, str) for w in stopwords):
            raise self.fail("attribute 'stopwords' must be a list of strings")
        self.stops = set(stopwords) if self.case_sensitive else {w.casefold() for w in stopwords}
        locale = self.attr("locale", "")
        if locale and not isinstance(locale, str):
            raise self.fail(f"attribute 'locale' must be a string, got {locale!r}")

    def run(self, x):
        x = _strings(self, x)
        if x.ndim == 2 and x.shape[0] != 1 or x.ndim not in (1, 2):
            raise self.fail(f"the input must be [C] or [1, C], got {list(x.shape)}")
        _check_text(self, x)
        kept = [v for v in x.flat if (v if self.case_sensitive else v.casefold()) not in self.stops]
        if self.action == "LOWER":
            kept = [v.lower() for v in kept]
        elif self.action == "UPPER":
            kept = [v.upper() for v in kept]
        kept = kept or [""]
        out = np.empty(len(kept), dtype=object)
        out[:] = kept
        return out.reshape((1, -1) if x.ndim == 2 else (-1,))


# ----------------------------------------------------------------------------------------------------------------
# RegexFullMatch: a Thompson NFA from Python's parse of the pattern


class _Nfa:
    """States: ("char", test, next), ("split", a, b), ("assert", kind, next), ("match",). ``test(c) -> bool``."""

    def __init__(self, op: Op, pattern: str):
        self.op = op
        try:
            parsed = sre_parse.parse(pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            raise op.fail(f"invalid regular expression {pattern!r}: {exc}") from None
        flags = parsed.state.flags
        if flags & ~(re.UNICODE | re.IGNORECASE | re.DOTALL):
            raise op.fail(f"the pattern {pattern!r} uses flags RE2 does not have")
        self.ignore_case = bool(flags & re.IGNORECASE)
        self.dotall = bool(flags & re.DOTALL)
        self.states: list[tuple] = []
        start, ends = self._sequence(list(parsed), depth=0)
        match = self._add(("match",))
        self._patch(ends, match)
        self.start = start if start is not None else match

    # -- construction: a fragment is (start state, list of (state, slot) to patch with the next state)
    def _add(self, state: tuple) -> int:
        if len(self.states) >= MAX_NFA_STATES:
            raise self.op.fail(f"the regular expression is too large (over {MAX_NFA_STATES:,} NFA states with its"
                               " repetitions expanded)")
        self.states.append(state)
        return len(self.states) - 1

    def _patch(self, ends: list[tuple[int, int]], target: int) -> None:
        for index, slot in ends:
            state = list(self.states[index])
            state[slot] = target
            self.states[index] = tuple(state)

    def _sequence(self, items: list, depth: int) -> tuple[int | None, list]:
        if depth > 200:
            raise self.op.fail("the regular expression nests too deeply")
        start, ends = None, []
        for op_code, arg in items:
            frag_start, frag_ends = self._item(op_code, arg, depth)
            if frag_start is None:
                continue
            if start is None:
                start = frag_start
            else:
                self._patch(ends, frag_start)
            ends = frag_ends
        return start, ends

    def _empty(self) -> tuple[int, list]:
        state = self._add(("split", None, None))  # an epsilon: both branches patched to the same next state
        return state, [(state, 1), (state, 2)]

    def _item(self, code, arg, depth: int) -> tuple[int | None, list]:
        C = sre_constants
        if code in (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN):
            state = self._add(("char", self._test(code, arg), None))
            return state, [(state, 2)]
        if code == C.SUBPATTERN:
            group, add_flags, del_flags, body = arg
            if add_flags or del_flags:
                raise self.op.fail("inline flags inside a group are not supported")
            start, ends = self._sequence(list(body), depth + 1)
            return (start, ends) if start is not None else self._empty()
        if code == C.BRANCH:
            _, alternatives = arg
            starts, ends = [], []
            for alternative in alternatives:
                s, e = self._sequence(list(alternative), depth + 1)
                if s is None:
                    s, e = self._empty()
                starts.append(s)
                ends += e
            start = starts[-1]
            for s in reversed(starts[:-1]):
                start = self._add(("split", s, start))
            return start, ends
        if code in (C.MAX_REPEAT, C.MIN_REPEAT):
            low, high, body = arg
            return self._repeat(low, high, list(body), depth)
        if code == C.AT:
            if arg in (C.AT_BEGINNING, C.AT_BEGINNING_STRING):
                kind = "begin"
            elif arg in (C.AT_END, C.AT_END_STRING):
                kind = "end"
            elif arg in (C.AT_BOUNDARY, C.AT_UNI_BOUNDARY):
                kind = "boundary"
            elif arg in (C.AT_NON_BOUNDARY, C.AT_UNI_NON_BOUNDARY):
                kind = "non-boundary"
            else:
                raise self.op.fail(f"the anchor {arg} is not supported")
            state = self._add(("assert", kind, None))
            return state, [(state, 2)]
        name = str(code).lower()
        raise self.op.fail(f"the regular expression uses {name}, which RE2 (the syntax ONNX specifies) does not have")

    def _repeat(self, low: int, high: int, body: list, depth: int) -> tuple[int | None, list]:
        unbounded = high == sre_constants.MAXREPEAT
        copies = low + (1 if unbounded else high - low)
        if copies > MAX_NFA_STATES:
            raise self.op.fail(f"the repetition {{{low},{high}}} is too large")
        start, ends = None, []

        def chain(frag_start, frag_ends):
            nonlocal start, ends
            if start is None:
                start = frag_start
            else:
                self._patch(ends, frag_start)
            ends = frag_ends

        for _ in range(low):
            s, e = self._sequence(body, depth + 1)
            if s is None:
                s, e = self._empty()
            chain(s, e)
        if unbounded:  # star: split -> body -> back to split
            s, e = self._sequence(body, depth + 1)
            if s is None:
                s, e = self._empty()
            split = self._add(("split", s, None))
            self._patch(e, split)
            chain(split, [(split, 2)])
        else:  # optional copies: split -> body -> (next optional) ; split's other branch skips all the rest
            skips: list[tuple[int, int]] = []
            for _ in range(high - low):
                s, e = self._sequence(body, depth + 1)
                if s is None:
                    s, e = self._empty()
                split = self._add(("split", s, None))
                chain(split, e)
                skips.append((split, 2))
            ends = ends + skips
        if start is None:
            return self._empty()
        return start, ends

    def _test(self, code, arg):
        C = sre_constants
        fold = self.ignore_case
        if code == C.ANY:
            return (lambda c: True) if self.dotall else (lambda c: c != "\n")
        if code in (C.LITERAL, C.NOT_LITERAL):
            want = chr(arg)
            positive = code == C.LITERAL
            if fold:
                low = want.lower()
                return lambda c: (c.lower() == low) == positive
            return lambda c: (c == want) == positive
        tests, negate = [], False
        for item_code, item in arg:
            if item_code == C.NEGATE:
                negate = True
            elif item_code == C.LITERAL:
                tests.append(("in", chr(item)))
            elif item_code == C.RANGE:
                tests.append(("range", (chr(item[0]), chr(item[1]))))
            elif item_code == C.CATEGORY:
                tests.append(("category", item))
            else:
                raise self.op.fail(f"the character class item {item_code} is not supported")

        def category(c: str, which) -> bool:
            if which in (C.CATEGORY_DIGIT, C.CATEGORY_UNI_DIGIT):
                return c.isdecimal()
            if which in (C.CATEGORY_NOT_DIGIT, C.CATEGORY_UNI_NOT_DIGIT):
                return not c.isdecimal()
            if which in (C.CATEGORY_SPACE, C.CATEGORY_UNI_SPACE):
                return c.isspace()
            if which in (C.CATEGORY_NOT_SPACE, C.CATEGORY_UNI_NOT_SPACE):
                return not c.isspace()
            if which in (C.CATEGORY_WORD, C.CATEGORY_UNI_WORD):
                return c.isalnum() or c == "_"
            if which in (C.CATEGORY_NOT_WORD, C.CATEGORY_UNI_NOT_WORD):
                return not (c.isalnum() or c == "_")
            return False

        def one(c: str) -> bool:
            for kind, value in tests:
                if kind == "in" and c == value or kind == "range" and value[0] <= c <= value[1] or \
                        kind == "category" and category(c, value):
                    return True
            return False

        if fold:
            return lambda c: (one(c) or one(c.lower()) or one(c.upper())) != negate
        return lambda c: one(c) != negate

    # -- matching: the set of live states, advanced one character at a time
    def _closure(self, seeds: list[int], text: str, at: int) -> set[int]:
        live: set[int] = set()
        stack = list(seeds)
        states = self.states
        while stack:
            index = stack.pop()
            if index is None or index in live:
                continue
            live.add(index)
            state = states[index]
            if state[0] == "split":
                stack += [state[1], state[2]]
            elif state[0] == "assert":
                if self._holds(state[1], text, at):
                    stack.append(state[2])
        return live

    @staticmethod
    def _holds(kind: str, text: str, at: int) -> bool:
        if kind == "begin":
            return at == 0
        if kind == "end":
            return at == len(text)
        before = at > 0 and (text[at - 1].isalnum() or text[at - 1] == "_")
        after = at < len(text) and (text[at].isalnum() or text[at] == "_")
        return (before != after) == (kind == "boundary")

    def fullmatch(self, text: str) -> bool:
        live = self._closure([self.start], text, 0)
        states = self.states
        for at, c in enumerate(text):
            following = [states[i][2] for i in live if states[i][0] == "char" and states[i][1](c)]
            if not following:
                return False
            live = self._closure(following, text, at + 1)
        return any(states[i][0] == "match" for i in live)


@register("RegexFullMatch", 20)
class RegexFullMatch(Op):
    """True where the whole string matches ``pattern`` (RE2 syntax), matched in linear time (module docstring)."""

    def __init__(self, node: NodeSpec):
        super().__init__(node)
        pattern = self.attr("pattern")
        if not isinstance(pattern, str):
            raise self.fail("attribute 'pattern' (a string) is missing")
        self.nfa = _Nfa(self, pattern)

    def run(self, x):
        x = _strings(self, x)
        total = sum(len(v) + 1 for v in x.flat)
        # one (character, live state) step in Python costs about what a thousand multiply-adds do in NumPy
        self.check_work(float(total) * len(self.nfa.states) * 1000, "matching the regular expression")
        out = np.fromiter((self.nfa.fullmatch(v) for v in x.flat), dtype=bool, count=x.size)
        return out.reshape(x.shape)
