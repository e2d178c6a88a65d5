"""Trace and segment id formats (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from tasks.ids import is_trace_id, segment_id_problem, trace_id_problem


@pytest.mark.parametrize(
    "value",
    [
        "1-5759e988-bd862e3fe1be46a994272793",  # X-Ray
        "1-00000000-bd862e3fe1be46a994272793",  # epoch 0: a format-valid id (its time is not credible)
        "1-5759E988-BD862E3FE1BE46A994272793",  # upper-case hex
        "4bf92f3577b34da6a3ce929d0e0e4736",  # W3C
    ],
)
def test_trace_ids_of_both_formats_are_accepted(value: str) -> None:
    assert trace_id_problem(value) is None
    assert is_trace_id(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "neither"),
        ("garbage", "neither"),
        ("1-zzzzzzzz-0000", "neither"),
        ("1-zzzzzzzz-000000000000000000000a03", "neither"),
        ("../../../etc", "neither"),
        ("1-00000000-000000000000000000000000", "neither"),  # all zeros
        ("0" * 32, "neither"),
        ("1-5759e988-bd862e3fe1be46a99427279", "neither"),  # one digit short
        (7, "is a int, not a string"),
        (["x"], "is a list, not a string"),
        (None, "is a NoneType, not a string"),
    ],
)
def test_anything_else_is_refused_with_a_reason_naming_the_value(value: Any, reason: str) -> None:
    problem = trace_id_problem(value)
    assert problem is not None and reason in problem
    assert repr(value)[:20] in problem


def test_segment_ids_are_sixteen_hex_digits() -> None:
    assert segment_id_problem("70de5b6f19ff9a0a") is None
    assert segment_id_problem("70DE5B6F19FF9A0A") is None
    assert segment_id_problem("0" * 16) is None  # X-Ray accepts it (moto and the sandbox's traffic use it)
    for bad in ("", "abcdefghijklmnop", "../etc", "70de5b6f19ff9a0", 12, None):
        assert segment_id_problem(bad) is not None


def test_a_long_value_is_shortened_in_the_reason() -> None:
    problem = trace_id_problem("x" * 5000)
    assert problem is not None and len(problem) < 200
