"""Expressions and templates on their own: the extension functions and their bounds, where an
interpolation ends, the escape for a literal ``${{``, and the errors a user sees."""

from __future__ import annotations

import pytest

from braid.expressions import ExpressionError, compile_expression, compile_template
from braid.expressions.functions import MAX_LIST, MAX_STRING


def ev(source: str, **context: object) -> object:
    return compile_expression(source, "spec.x").evaluate(dict(context))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("'a,b,c'.split(',')", ["a", "b", "c"]),
        ("['a', 'b'].join('-')", "a-b"),
        ("'Hello'.lowerAscii() + 'x'.upperAscii()", "helloX"),
        ("'a-b-c'.replace('-', '+')", "a+b+c"),
        ("'  pad '.trim()", "pad"),
        ("'abcdef'.substring(2, 4)", "cd"),
        ("'abc'.indexOf('c')", 2),
        ("'abc'.charAt(1)", "b"),
        ("'abc'.reverse()", "cba"),
        ("'%s has %d pages (%.1f%%)'.format(['doc', 12, 99.5])", "doc has 12 pages (99.5%)"),
        ("'%x/%o/%b'.format([255, 8, 5])", "ff/10/101"),
        ("'%s'.format([{'a': [1, 2]}])", '{"a":[1,2]}'),
        ("lists.range(4)", [0, 1, 2, 3]),
        ("lists.range(3).map(i, 'page-' + string(i))", ["page-0", "page-1", "page-2"]),
        ("[3, 1, 2].sort()", [1, 2, 3]),
        ("[[1], [2, 3]].flatten()", [1, 2, 3]),
        ("[1, 1, 2].distinct()", [1, 2]),
        ("math.greatest([1, 5, 2])", 5),
        ("math.least(4, 2)", 2),
        ("sets.contains([1, 2, 3], [2])", True),
        ("base64.encode(b'hi')", "aGk="),
        ("'a'.contains('a') && 'abc'.startsWith('ab')", True),
    ],
)
def test_extension_functions(source, expected):
    assert ev(source) == expected


def test_functions_read_the_context():
    assert ev("params.topics.split(',').map(t, t.trim())", params={"topics": "a, b"}) == ["a", "b"]
    assert ev("lists.range(params.n)", params={"n": 2}) == [0, 1]


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("lists.range(-1)", "n must be between 0 and"),
        (f"lists.range({MAX_LIST + 1})", "n must be between 0 and"),
        ("lists.range('3')", "lists.range() takes an int"),
        ("'%d'.format(['x'])", "%d needs a number"),
        ("'%s %s'.format(['x'])", "more verbs than the 1 argument"),
        ("'%s'.format('x')", "takes a list of arguments"),
        ("'page-%02d'.format([3])", "'%0' is not a verb"),
        ("'100%'.format([])", "'%' is not a verb"),
    ],
)
def test_functions_refuse_bad_arguments_with_a_message(source, fragment):
    with pytest.raises(ExpressionError) as exc:
        ev(source)
    assert fragment in exc.value.message
    assert "Check function arguments" not in exc.value.message
    assert exc.value.path == "spec.x"


def test_strings_and_lists_a_function_makes_are_bounded():
    big = "a" * 1024
    with pytest.raises(ExpressionError, match=f"over {MAX_STRING} characters"):
        ev("s.replace('a', s)", s=big)
    # the list range() makes counts against the cost budget before map walks it
    with pytest.raises(ExpressionError, match="too expensive"):
        ev("lists.range(params.n).map(i, lists.range(params.n).map(j, i * j))", params={"n": 50000})
    assert len(ev("lists.range(params.n).map(i, i)", params={"n": 1000})) == 1000  # type: ignore[arg-type]


def test_unknown_functions_and_namespaces_are_named_at_compile_time():
    with pytest.raises(ExpressionError, match="unknown function 'frobnicate'"):
        compile_expression("frobnicate(1)", "spec.x")
    expression = compile_expression("math.greatest([1, 2]) + lists.range(1).size()", "spec.x")
    assert expression.unknown_names() == set()
    assert compile_expression("maths.x", "spec.x").unknown_names() == {"maths"}


@pytest.mark.parametrize(
    ("source", "context", "expected"),
    [
        ("plain", {}, "plain"),
        ("a-${{ params.n }}-b", {"params": {"n": 1}}, "a-1-b"),
        ("${{ 'a }} b' }}", {}, "a }} b"),  # }} inside a string literal does not end it
        ('${{ "x}}" + "}}y" }}', {}, "x}}}}y"),
        ("${{ {'a': {'b': 1}}.a.b }}", {}, "1"),  # nor do a map literal's braces
        ("${{ r'\\d}}' }}", {}, "\\d}}"),  # raw strings: backslash is not an escape
        ("${{ '''multi }} line''' }}", {}, "multi }} line"),
        ("$${{ not evaluated }}", {}, "${{ not evaluated }}"),  # the escape
        ("cost: $${{ x }} and ${{ 1 + 1 }}", {}, "cost: ${{ x }} and 2"),
        ("$$ alone stays", {}, "$$ alone stays"),
        ("${{1}}${{2}}", {}, "12"),
    ],
)
def test_templates_end_at_the_right_braces(source, context, expected):
    assert compile_template(source, "spec.x").render(context) == expected


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("${{ 1 + 1 }", "unterminated ${{ interpolation"),
        ("${{ 'a }}", "unterminated ${{ interpolation"),  # the string swallows the braces
        ("${{   }}", "empty ${{ }} interpolation"),
        ("${{ 1 + }}", "invalid CEL"),
    ],
)
def test_template_errors_name_what_is_wrong(source, fragment):
    with pytest.raises(ExpressionError) as exc:
        compile_template(source, "spec.steps[0].container.image")
    assert fragment in exc.value.message
    assert exc.value.path == "spec.steps[0].container.image"
