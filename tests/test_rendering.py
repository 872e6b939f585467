"""Email templates: the shipped set, the sandbox, CAN-SPAM footers and ``leadflow validate``."""

from __future__ import annotations

import html
import shutil
from html.entities import html5
from pathlib import Path
from typing import Any

import css_inline
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.mail.context import LEAD_KEYS, TEMPLATE_GLOBALS
from leadflow.mail.html_text import _BREAK, _fast_extract, _TextExtractor, extract, html_to_text
from leadflow.mail.rendering import (
    TemplateRenderError,
    TemplateSet,
    _shows,
    _squash,
    sample_context,
)
from leadflow.mail.template_check import TemplateProblem

SHIPPED = Path(__file__).resolve().parents[1] / "templates" / "email"
EXPECTED_NAMES = [
    "breakup",
    "case_study",
    "checkin_30d",
    "checkin_90d",
    "checkin_onboarding",
    "followup_value",
    "followup_value_b",
    "meeting_followup",
    "proposal_followup",
    "renewal_reminder",
    "revival",
    "welcome",
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A template directory with the shipped layout, for templates written by a test."""
    shutil.copy(SHIPPED / "base.html.j2", tmp_path / "base.html.j2")
    return tmp_path


def write(directory: Path, filename: str, source: str) -> Path:
    path = directory / filename
    path.write_text(source, encoding="utf-8")
    return path


def email(subject: str, content: str) -> str:
    return (
        '{% extends "base.html.j2" %}\n'
        f"{{% block subject %}}{subject}{{% endblock %}}\n"
        f"{{% block content %}}\n{content}\n{{% endblock %}}\n"
    )


def context_with(**lead: Any) -> dict[str, Any]:
    context = sample_context()
    context["lead"].update(lead)
    return context


def test_all_pipeline_templates_are_shipped() -> None:
    assert TemplateSet(SHIPPED).names() == EXPECTED_NAMES


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_shipped_template_renders_with_footer_in_both_parts(name: str) -> None:
    context = sample_context()
    address = context["sender"]["postal_address"]
    url = context["unsubscribe_url"]

    rendered = TemplateSet(SHIPPED).compile(name).render(context)

    assert rendered.subject
    assert "\n" not in rendered.subject
    assert address in rendered.text
    assert url in rendered.text
    assert address in rendered.html
    assert f'href="{url}"' in rendered.html
    assert "<" not in rendered.text
    assert "Dana" in rendered.text


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_shipped_template_passes_validation(name: str) -> None:
    assert TemplateSet(SHIPPED).check(name) == []


def test_css_is_inlined_into_style_attributes() -> None:
    rendered = TemplateSet(SHIPPED).compile("welcome").render(sample_context())

    assert '<p style="margin: 0 0 16px 0;">Hi Dana,</p>' in rendered.html
    assert ".content {" not in rendered.html.split("@media")[0]


def test_subject_is_one_line_of_plain_text(workdir: Path) -> None:
    write(workdir, "hello.html.j2", email("  Hi {{ lead.company }}\n  and   team ", "<p>Hi</p>"))
    context = context_with(company="Müller & Söhne\r\nBcc: x@example.com")

    rendered = TemplateSet(workdir).compile("hello").render(context)

    assert rendered.subject == "Hi Müller & Söhne Bcc: x@example.com and team"


def test_empty_subject_is_an_error(workdir: Path) -> None:
    write(workdir, "blank.html.j2", email("{{ lead.title }}", "<p>Hi</p>"))

    with pytest.raises(TemplateRenderError) as caught:
        TemplateSet(workdir).compile("blank").render(context_with(title=" \n "))

    assert caught.value.message == "the subject is empty"


def test_typo_in_a_field_is_an_error_with_its_line(workdir: Path) -> None:
    write(workdir, "typo.html.j2", email("Hi", "<p>Hi</p>\n<p>{{ lead.frist_name }}</p>"))

    with pytest.raises(TemplateRenderError) as caught:
        TemplateSet(workdir).compile("typo").render(sample_context())

    assert caught.value.template == "typo"
    assert caught.value.message == "'dict object' has no attribute 'frist_name'"
    assert caught.value.lineno == 5


def test_hostile_lead_data_is_rendered_as_inert_text() -> None:
    context = context_with(
        first_name="{{ 7*7 }}<script>alert(1)</script>",
        company="{% raw %}Evil{% endraw %} & Co\r\nBcc: victim@example.com",
    )

    rendered = TemplateSet(SHIPPED).compile("welcome").render(context)

    assert "{{ 7*7 }}" in rendered.text
    assert "49" not in rendered.text + rendered.html
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert "{% raw %}Evil{% endraw %} &amp; Co" in rendered.html
    assert rendered.subject == (
        "Welcome, {{ 7*7 }}<script>alert(1)</script>: a quick hello from Brightpath Software"
    )


def test_compiled_templates_are_cached_per_set() -> None:
    templates = TemplateSet(SHIPPED)

    assert templates.compile("welcome") is templates.compile("welcome")


def test_render_requires_exactly_the_documented_context() -> None:
    compiled = TemplateSet(SHIPPED).compile("welcome")
    context = sample_context()
    del context["message"]
    context["secret_key"] = "x"

    with pytest.raises(TemplateRenderError) as caught:
        compiled.render(context)

    assert caught.value.message == "bad template context: missing message; unexpected secret_key"
    assert set(sample_context()) == TEMPLATE_GLOBALS
    assert set(sample_context()["lead"]) == LEAD_KEYS


def test_html_without_the_unsubscribe_footer_is_refused(workdir: Path) -> None:
    write(
        workdir,
        "nofooter.html.j2",
        "{% block subject %}Hi{% endblock %}<p>{{ sender.postal_address }}</p>",
    )

    with pytest.raises(TemplateRenderError) as caught:
        TemplateSet(workdir).compile("nofooter").render(sample_context())

    assert caught.value.message == (
        "the HTML part has no link to unsubscribe_url (required by CAN-SPAM)"
    )


def test_text_template_is_used_and_gets_the_footer_appended(workdir: Path) -> None:
    write(workdir, "note.html.j2", email("Note", "<p>HTML body</p>"))
    write(workdir, "note.txt.j2", "Hi {{ lead.first_name }} & co,\n\nPlain body.\n")
    context = context_with(first_name="<Dana>")

    rendered = TemplateSet(workdir).compile("note").render(context)

    assert rendered.text == (
        "Hi <Dana> & co,\n\nPlain body.\n\n--\nBrightpath Software, "
        "500 Market Street, Suite 400, San Francisco, CA 94105, USA\n"
        "Unsubscribe: https://leadflow.example/unsubscribe/sample-token\n"
    )


def test_text_part_generated_from_html() -> None:
    document = (
        "<html><head><title>T</title><style>p{color:red}</style></head><body>"
        "<h1>Hello</h1><p>First line<br>second   line</p>"
        '<p>Read <a href="https://example.com/a?b=1&amp;c=2">the guide</a>, or '
        '<a href="https://example.com/x">https://example.com/x</a>.</p>'
        "<ul><li>one</li><li>two</li></ul><script>alert(1)</script></body></html>"
    )

    assert html_to_text(document) == (
        "Hello\n\nFirst line\nsecond line\n\n"
        "Read the guide (https://example.com/a?b=1&c=2), or https://example.com/x.\n\n"
        "- one\n- two"
    )


# --- the fast reader of inlined HTML gives what HTMLParser gives -------------------------


def read_with_html_parser(document: str) -> tuple[str, list[str]]:
    parser = _TextExtractor()
    parser.feed(document)
    parser.close()
    return parser.text(), parser.links


def read(document: str) -> tuple[str, list[str]]:
    text, links = extract(document)
    return text, links


HOSTILE = {
    "first_name": "Eve <b>&amp; 'x' \"y\"\r\n</p><p>Bcc: z",
    "company": "{{ 7*7 }} & <script>alert(1)</script> <!-- c --> ]]>",
    "industry": "\u00a0ü  \t x &nbsp; <style>p{}</style>",
}


@pytest.mark.parametrize("name", EXPECTED_NAMES)
@pytest.mark.parametrize("lead", [{}, HOSTILE, {"first_name": None, "company": None}])
def test_inlined_shipped_templates_read_as_html_parser_reads_them(
    name: str, lead: dict[str, Any]
) -> None:
    compiled = TemplateSet(SHIPPED).compile(name)
    document = css_inline.inline(compiled._html.render(context_with(**lead)))

    fast = _fast_extract(document)

    assert fast is not None  # css_inline output never needs HTMLParser
    assert (fast.text, fast.links) == read_with_html_parser(document)


_ALPHABET = st.sampled_from(
    [
        *"ab &;<>\"'=/-!\n\t\u00a0é\x0b\u017f",
        *("&amp;", "&lt;", "&#39;", "&nbsp;", "&bogus", "&#10;", "&#1;", "<!--", "-->", "</"),
    ]
)
_TEXT = st.lists(_ALPHABET, max_size=12).map("".join)
_TAGS = st.sampled_from(
    [
        *("p", "div", "a", "img", "br", "table", "tr", "td", "th", "li", "ul", "span", "h1"),
        *("b", "head", "title", "style", "script", "template", "svg", "P", "A", "Td", "xmp"),
        *("textarea", "STYLE", "Script", "p\x0bhref=x"),
    ]
)


@st.composite
def _markup(draw: st.DrawFn, depth: int = 0) -> str:
    """Loose HTML: nested tags with attributes (quoted or not), text with entities, comments,
    stray "<" and unclosed tags, so both the fast path and the fallback are exercised."""
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.integers(0, 9))
        if kind < 4 or depth > 3:
            parts.append(draw(_TEXT))
        elif kind == 4:
            parts.append(f"<!--{draw(_TEXT)}-->")
        else:
            tag = draw(_TAGS)
            attrs = ""
            for attr in draw(
                st.lists(st.sampled_from(["href", "alt", "class", "HREF"]), max_size=2)
            ):
                value = draw(_TEXT)
                attrs += draw(
                    st.sampled_from([f' {attr}="{value}"', f" {attr}={value}", f" {attr}", ""])
                )
            inner = draw(_markup(depth + 1))
            closing = draw(st.sampled_from([f"</{tag}>", "", f"</{tag} >", "/>"]))
            parts.append(f"<{tag}{attrs}>{inner}{closing}")
    return "".join(parts)


_STYLE = "<style>p { color: red } a { color: blue } .x td { padding: 1px }</style>"


@settings(max_examples=300, deadline=None, database=None)
@given(body=_markup())
def test_any_markup_reads_as_html_parser_reads_it(body: str) -> None:
    """Inlined (the real input: the fast path) and as written (mostly the fallback)."""
    document = f"<!DOCTYPE html><html><head>{_STYLE}</head><body>{body}</body></html>"
    inlined = css_inline.inline(document)

    assert read(inlined) == read_with_html_parser(inlined)
    assert read(document) == read_with_html_parser(document)
    assert read(body) == read_with_html_parser(body)


@pytest.mark.parametrize(
    "document",
    [
        'x<p\x0bhref="a b">y</p>z',  # HTMLParser never gives back part of a tag name
        "<style>a</\u017ftyle>b</style>c",  # its raw-text end also matches U+017F for "s"
        "<p>a\uffffb</p>",  # holds the fast reader's own line-break character
        "<p>a\x01b&#1;&#xffff;c</p>",
        '<p>x<img alt="1\n2">y<a href="u\nv">w</a></p><br/><TITLE/>z',
        "<script>if (a </ b) {}</script>tail",
    ],
)
def test_markup_the_fast_reader_once_misread(document: str) -> None:
    assert read(document) == read_with_html_parser(document)


def test_unescape_never_makes_the_fast_readers_line_break() -> None:
    code = ord(_BREAK)
    assert html.unescape(f"&#{code};&#x{code:x};&#X{code:X};&#{code:07}") == ""
    assert not any(_BREAK in value for value in html5.values())


@given(text=st.text(), phrase=st.text())
def test_shows_is_a_substring_test_on_squashed_text(text: str, phrase: str) -> None:
    phrase = _squash(phrase)
    assert _shows(text, phrase) == (phrase in _squash(text))
    assert _shows(f"x {phrase}\n y", phrase)


# --- validation (leadflow validate) -----------------------------------------------------


def messages(problems: list[TemplateProblem]) -> list[tuple[str, int, str]]:
    return [(Path(p.file).name, p.line, p.message) for p in problems]


def test_check_reports_missing_template_with_suggestion() -> None:
    problems = TemplateSet(SHIPPED).check("welcom")

    assert messages(problems) == [
        ("welcom.html.j2", 0, "template 'welcom' not found (did you mean 'welcome'?)")
    ]


def test_check_reports_syntax_error_with_line(workdir: Path) -> None:
    write(workdir, "broken.html.j2", email("Hi", "<p>Hi</p>\n{% if lead.first_name %}\n<p>x</p>"))

    problems = TemplateSet(workdir).check("broken")

    assert messages(problems) == [
        (
            "broken.html.j2",
            7,
            "syntax error: Encountered unknown tag 'endblock'. You probably made a nesting "
            "mistake. Jinja is expecting this tag, but currently looking for 'elif' or 'else' "
            "or 'endif'. The innermost block that needs to be closed is 'if'.",
        )
    ]


def test_check_reports_missing_subject_block(workdir: Path) -> None:
    write(
        workdir,
        "nosubject.html.j2",
        '{% extends "base.html.j2" %}{% block content %}<p>Hi</p>{% endblock %}',
    )

    problems = TemplateSet(workdir).check("nosubject")

    assert messages(problems) == [
        ("nosubject.html.j2", 1, "template does not define {% block subject %}")
    ]


def test_check_reports_unknown_variable_with_suggestion(workdir: Path) -> None:
    write(workdir, "var.html.j2", email("Hi", "<p>Hi</p>\n<p>{{ laed.first_name }}</p>"))

    problems = TemplateSet(workdir).check("var")

    assert messages(problems) == [
        ("var.html.j2", 5, "unknown variable 'laed' (did you mean 'lead'?)"),
        ("var.html.j2", 5, "test render with sample data failed: 'laed' is undefined"),
    ]


def test_check_reports_unknown_fields_with_suggestions(workdir: Path) -> None:
    source = email(
        "Hi {{ lead.frist_name }}",
        "<p>{{ sender['compnay'] }}</p>\n<p>{{ message.get('stepp') }}</p>\n"
        "<p>{{ lead.attributes.plan }} {{ lead.attributes.get('seats') }}</p>",
    )
    write(workdir, "fields.html.j2", source)

    problems = TemplateSet(workdir).check("fields", attribute_keys=["plan"])

    assert sorted(messages(problems)) == [
        (
            "fields.html.j2",
            2,
            "test render with sample data failed: 'dict object' has no attribute 'frist_name'",
        ),
        ("fields.html.j2", 2, "unknown field lead.frist_name (did you mean 'lead.first_name'?)"),
        ("fields.html.j2", 4, "unknown field sender.compnay (did you mean 'sender.company'?)"),
        ("fields.html.j2", 5, "unknown field message.stepp (did you mean 'message.step'?)"),
        (
            "fields.html.j2",
            6,
            "unknown field lead.attributes.seats; declared attributes: plan",
        ),
    ]


def test_check_accepts_declared_custom_fields(workdir: Path) -> None:
    source = email("Hi", "<p>{{ lead.attributes.plan }} {{ lead.region }}</p>")
    write(workdir, "custom.html.j2", source)

    templates = TemplateSet(workdir)

    assert (
        templates.check("custom", lead_keys=LEAD_KEYS | {"region"}, attribute_keys=["plan"]) == []
    )
    assert [p.message for p in templates.check("custom")] == [
        "unknown field lead.attributes.plan; declared attributes: none",
        "unknown field lead.region",
        "test render with sample data failed: 'dict object' has no attribute 'plan'",
    ]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (
            "{{ lead.__class__.__mro__ }}",
            "test render with sample data failed: "
            "access to attribute '__class__' of 'dict' object is unsafe.",
        ),
        (
            "{{ ''.__class__ }}",
            "test render with sample data failed: "
            "access to attribute '__class__' of 'str' object is unsafe.",
        ),
        (
            "{{ cycler.__init__.__globals__ }}",
            "unknown variable 'cycler'; available: lead, message, sender, unsubscribe_url",
        ),
        (
            "{{ lead.attributes.clear() }}",
            "test render with sample data failed: "
            "access to attribute 'clear' of 'dict' object is unsafe.",
        ),
    ],
)
def test_sandbox_escape_attempts_fail_validation(
    workdir: Path, expression: str, expected: str
) -> None:
    write(workdir, "escape.html.j2", email("Hi", f"<p>{expression}</p>"))
    templates = TemplateSet(workdir)

    problems = templates.check("escape", attribute_keys=["clear"])

    assert expected in [p.message for p in problems]
    with pytest.raises(TemplateRenderError):
        templates.compile("escape").render(sample_context(attribute_keys=["clear"]))


# --- hostile templates: refused in bounded time, never hang or exhaust memory ---------------

HOSTILE = {
    "power": ("{{ 10**(10**10) }}", "**: the result would be too large"),
    "repeat": ("{{ 'x' * 1000000000 }}", "*: the repeated result would be too long"),
    "nested_loops": (
        "{% for a in lead.email %}{% for b in lead.email %}{% for c in lead.email %}"
        "{% endfor %}{% endfor %}{% endfor %}",
        "loops nested deeper than 2",
    ),
    "huge_output": (
        "{% for a in lead.email %}{% for b in lead.email %}{{ lead.email * 1000 }}"
        "{% endfor %}{% endfor %}",
        "longer than 1,000,000 characters",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_template_is_a_problem_found_in_bounded_time(tmp_path: Path, case: str) -> None:
    import time

    from conftest import TEMPLATES

    from leadflow.mail.rendering import TemplateSet

    folder = tmp_path / "templates"
    shutil.copytree(TEMPLATES, folder)
    expression, message = HOSTILE[case]
    source = (folder / "welcome.html.j2").read_text(encoding="utf-8")
    (folder / "evil.html.j2").write_text(
        source.replace("{% block content %}", "{% block content %}" + expression, 1),
        encoding="utf-8",
    )
    started = time.monotonic()
    problems = TemplateSet(folder).check("evil")
    assert time.monotonic() - started < 5
    assert len(problems) == 1
    assert problems[0].file.endswith("evil.html.j2")
    assert problems[0].line == (0 if case == "huge_output" else 3)  # a size has no one line
    assert message in problems[0].message
