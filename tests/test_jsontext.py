"""
The fast JSON writer (dumpminer/report/jsontext.py) writes what
``json.dumps(obj, indent=2, ensure_ascii=True)`` writes, byte for byte: on
random documents of every kind json takes, and on a real report.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dumpminer.report.jsontext import dumps

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
keys = st.text(max_size=8) | st.integers(-5, 10**6) | st.booleans() | st.none() | st.floats()
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(keys, inner, max_size=5)
    ),
    max_leaves=40,
)


def reference(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=True)


@settings(max_examples=400, deadline=None)
@given(documents)
def test_same_text_as_json(doc: Any) -> None:
    assert dumps(doc) == reference(doc)


@settings(max_examples=100, deadline=None)
@given(documents, st.integers(0, 4))
def test_nested_level_is_json_indented(doc: Any, level: int) -> None:
    """At *level*, every line but the first is indented by two spaces a level."""
    pad = "  " * level
    expected = "\n".join((pad + line if i else line)
                         for i, line in enumerate(reference(doc).split("\n")))  # fmt: skip
    assert dumps(doc, level) == expected


class Count(int):
    pass


class Share(float):
    pass


class Name(str):
    pass


def test_subclasses_and_special_floats() -> None:
    doc = {"n": Count(3), "s": Share(0.25), "t": Name("x\u00e9\n"), "b": [True, False, None],
           1.5: math.inf, True: -math.inf, None: math.nan, 7: (), "e": {}, "l": []}  # fmt: skip
    assert dumps(doc) == reference(doc)


@pytest.mark.parametrize("bad", [{(1, 2): 3}, [object()], {"a": {1, 2}}, b"bytes"])
def test_refuses_what_json_refuses(bad: Any) -> None:
    with pytest.raises(TypeError) as theirs:
        reference(bad)
    with pytest.raises(TypeError) as ours:
        dumps(bad)
    assert str(ours.value) == str(theirs.value)


def test_real_report(sample_manifest: dict[str, Any]) -> None:
    """A whole report of the sample (every field the JSON report has)."""
    import dumpminer
    from dumpminer.report.json import to_json_dict

    kdump = next(d["path"] for d in sample_manifest["dumps"] if d["format"] == "kdump")
    dump = dumpminer.open_dump(kdump, sample_manifest["vmlinux"])
    doc = to_json_dict(dumpminer.mine(dump.prog, "kmalloc-32", dump=dump))
    assert dumps(doc) == reference(doc)
