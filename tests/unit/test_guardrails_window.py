"""The stream window: for any text and any way of cutting it, masking the pieces as they come
equals masking the whole text, and what it holds back is no more than a match could need.

Property-based (Hypothesis), bounded and deterministic like the other fuzz tests.
"""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.guardrails.masker import Matcher
from extproc.guardrails.patterns import BUILTINS, compile_builtin, compile_pattern
from extproc.guardrails.prefix import compile_hold, prefix_source

PROPERTY = settings(
    max_examples=400,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Pieces of text that are, or nearly are, what the rules look for: a random join of them
# makes matches, near misses, overlaps and matches next to each other.
FRAGMENTS = [
    "john.doe@example.com",
    "a@b.co",
    "x@y",
    "@",
    ".com",
    "123-45-6789",
    "000-12-3456",
    "4111 1111 1111 1111",
    "4111111111111111",
    "4000-1234-5678-9010",
    "5500 0000 0000 0004",
    "(555) 123-4567",
    "+1 555 123 4567",
    "+44 20 7946 0958",
    "046 454 286",
    "046454286",
    "password: hunter2",
    "API_KEY",
    "api-key",
    "sk-abc123",
    "ok\n",
    "\n",
    " ",
]
ALPHABET = "ab@.-_ +()0123456789\nAPIKEYpasword:"

texts = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet=ALPHABET, max_size=6)), max_size=14
).map("".join)


def all_rules() -> list:
    rules = [compile_builtin(b.name) for b in BUILTINS.values()]
    rules += [
        compile_pattern("password.*", "PASSWORD"),  # unbounded: held until the line ends
        compile_pattern(r"API[_-]?KEY", "API_KEY"),
        compile_pattern(r"(?i)sk-[a-z0-9]{3,}(?![a-z0-9])", "SECRET"),  # a lookahead and a global flag
        compile_pattern(r"(\d)\1\1", "TRIPLE"),  # a backreference: the fixed-width fallback
        compile_pattern(r"ok$", "OK_AT_END"),  # $ also matches before a last newline
    ]
    return rules


MATCHER = Matcher(all_rules(), max_hold=100_000)


def pieces_of(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def streamed(matcher: Matcher, pieces: list[str]) -> str:
    window = matcher.window()
    return "".join(window.feed(p) for p in pieces) + window.flush()


@PROPERTY
@given(texts, st.lists(st.integers(0, 10_000), max_size=12))
def test_masking_pieces_equals_masking_the_whole(text: str, cuts: list[int]) -> None:
    assert streamed(MATCHER, pieces_of(text, cuts)) == MATCHER.mask(text)[0]


@PROPERTY
@given(texts)
def test_masking_one_character_at_a_time_equals_masking_the_whole(text: str) -> None:
    assert streamed(MATCHER, list(text)) == MATCHER.mask(text)[0]


@PROPERTY
@given(texts, st.lists(st.integers(0, 10_000), max_size=8))
def test_each_rule_alone_also_agrees(text: str, cuts: list[int]) -> None:
    for rule in all_rules():
        matcher = Matcher([rule], max_hold=100_000)
        assert streamed(matcher, pieces_of(text, cuts)) == matcher.mask(text)[0], rule.label


def test_a_window_holds_back_only_what_could_still_become_a_match() -> None:
    window = Matcher([compile_builtin("email")]).window()
    assert window.feed("Write to me at ") == "Write to me at "
    assert window.feed("john.do") == ""  # could be the start of an address
    assert window.feed("e@example") == ""
    assert window.feed(".com and bye") == "<EMAIL_ADDRESS> and "
    assert window.flush() == "bye"


def test_an_email_split_at_every_position_is_masked() -> None:
    matcher = Matcher([compile_builtin("email")])
    text = "contact jane.roe@example.org today"
    for cut in range(len(text) + 1):
        assert streamed(matcher, [text[:cut], text[cut:]]) == "contact <EMAIL_ADDRESS> today", cut


def test_the_hold_limit_lets_an_undecided_region_go() -> None:
    matcher = Matcher([compile_pattern("password.*", "PASSWORD")], max_hold=32)
    window = matcher.window()
    out = window.feed("password " + "x" * 100)
    assert window.held <= 32 and out  # a region longer than the limit is not held forever


@pytest.mark.parametrize(
    ("pattern", "prefix", "not_prefix"),
    [
        (r"abc", "ab", "abd"),
        (r"\d{3}-\d{2}", "123-4", "123-x"),
        (r"foo\b", "foo", "foox"),
        (r"a(?=bc)", "ab", "ax"),
        (r"x+y", "xxxx", "xz"),
        (r"(?i)key", "KE", "KX"),
    ],
)
def test_prefix_language(pattern: str, prefix: str, not_prefix: str) -> None:
    source = prefix_source(pattern)
    assert re.fullmatch(source, prefix)
    assert not re.fullmatch(source, not_prefix)


def test_hold_pattern_falls_back_to_the_width_for_backreferences() -> None:
    hold = compile_hold([r"(\d)\1"], cap=50)
    assert hold.search("abc12").start() <= 3
