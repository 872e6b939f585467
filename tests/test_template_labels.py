"""Issue 20, templates: sentence punctuation after names, display labels of coded values
(``labels:`` in the YAML, ``lead.<field>_label``), the ``article`` filter, a realistic sample
lead, and ``validate`` knowing the new filters and variables."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import DEFAULT_CONFIG, TEMPLATES

from leadflow.config import ConfigError, load_config
from leadflow.mail.context import LEAD_KEYS, article, end_sentence, label, lead_context
from leadflow.mail.html_text import html_to_text
from leadflow.mail.rendering import TemplateSet, sample_context

SHIPPED_NAMES = TemplateSet(TEMPLATES).names()
LABELS = {"industry": {"ecommerce": "E-commerce", "saas": "SaaS"}}


def context(*, company: str = "Acme Analytics Inc.", **lead: Any) -> dict[str, Any]:
    ctx = sample_context(labels=LABELS)
    ctx["sender"]["company"] = company
    row = {**ctx["lead"], **lead}
    ctx["lead"] = lead_context(row, LABELS)
    return ctx


# --- 1. a sentence ending in a name that ends in a period ----------------------------------


def test_footer_sentence_after_a_company_ending_in_a_period_has_one_period() -> None:
    rendered = TemplateSet(TEMPLATES).compile("welcome").render(context())

    footer = "you were in touch with Acme Analytics Inc. Not interested? Unsubscribe"
    assert footer in " ".join(html_to_text(rendered.html).split())
    assert footer.replace(" Unsubscribe", "") in " ".join(rendered.text.split())


def test_footer_sentence_after_a_plain_company_gets_its_period() -> None:
    rendered = TemplateSet(TEMPLATES).compile("welcome").render(context(company="Brightpath"))

    assert "in touch with Brightpath. Not interested?" in " ".join(rendered.text.split())


@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_no_shipped_email_doubles_a_period_after_names_ending_in_one(name: str) -> None:
    rendered = TemplateSet(TEMPLATES).compile(name).render(context(company="Northwind Ltd."))

    for part in (rendered.subject, rendered.text, html_to_text(rendered.html)):
        assert ".." not in part


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Acme Inc.", "Acme Inc."),
        ("Acme", "Acme."),
        ("Yahoo!", "Yahoo!"),
        ("Acme ", "Acme."),
        ("", ""),
    ],
)
def test_end_sentence(text: str, expected: str) -> None:
    assert end_sentence(text) == expected


# --- 2. labels and the article filter ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("E-commerce", "an E-commerce"),
        ("Education", "an Education"),
        ("Logistics", "a Logistics"),
        ("SaaS", "a SaaS"),
        ("hour", "an hour"),
        ("Honest Co", "an Honest Co"),
        ("University", "a University"),
        ("European", "a European"),
        ("one-stop", "a one-stop"),
        ("HR", "an HR"),
        ("B2B", "a B2B"),
        ("8-person", "an 8-person"),
        ("", ""),
        (None, ""),
    ],
)
def test_article(text: str | None, expected: str) -> None:
    assert article(text) == expected


@pytest.mark.parametrize(
    ("code", "labels", "expected"),
    [
        ("ecommerce", {"ecommerce": "E-commerce"}, "E-commerce"),
        ("ECommerce", {"ecommerce": "E-commerce"}, "E-commerce"),  # case does not matter
        ("education", {}, "Education"),  # not listed: the code, capitalised
        ("real_estate", {}, "Real estate"),
        ("US", {}, "US"),  # written with capitals: shown as written
        (None, {}, None),
        ("  ", {}, None),
    ],
)
def test_label(code: str | None, labels: dict[str, str], expected: str | None) -> None:
    assert label(code, labels) == expected


@pytest.mark.parametrize(
    ("industry", "subject"),
    [
        ("ecommerce", "How an E-commerce team cut follow-up time in half"),
        ("education", "How an Education team cut follow-up time in half"),
        ("logistics", "How a Logistics team cut follow-up time in half"),
        ("saas", "How a SaaS team cut follow-up time in half"),
        (None, "How a B2B team cut follow-up time in half"),
    ],
)
def test_case_study_subject_uses_the_label_and_its_article(
    industry: str | None, subject: str
) -> None:
    rendered = TemplateSet(TEMPLATES).compile("case_study").render(context(industry=industry))

    assert rendered.subject == subject


def test_the_sample_lead_has_a_coded_industry_like_imported_data() -> None:
    lead = sample_context()["lead"]

    assert lead["industry"] == "logistics"
    assert lead["industry_label"] == "Logistics"
    assert (
        sample_context(labels={"industry": {"logistics": "Freight"}})["lead"]["industry_label"]
        == "Freight"
    )
    assert {"industry_label", "country_label"} <= LEAD_KEYS


def test_the_shipped_config_labels_the_demo_industries() -> None:
    labels = load_config(DEFAULT_CONFIG, templates=TEMPLATES).config.labels

    assert labels["industry"]["ecommerce"] == "E-commerce"
    assert labels["industry"]["saas"] == "SaaS"


def test_validate_knows_the_new_filters_and_label_variables(tmp_path: Path) -> None:
    shutil.copy(TEMPLATES / "base.html.j2", tmp_path / "base.html.j2")
    (tmp_path / "ok.html.j2").write_text(
        '{% extends "base.html.j2" %}{% block subject %}Hi {{ lead.industry_label | article }}'
        "{% endblock %}{% block content %}<p>{{ lead.country_label }} {{ lead.company | "
        "end_sentence }}</p>{% endblock %}",
        encoding="utf-8",
    )
    (tmp_path / "typo.html.j2").write_text(
        '{% extends "base.html.j2" %}{% block subject %}Hi {{ lead.industry_lable }}'
        "{% endblock %}{% block content %}<p>x</p>{% endblock %}",
        encoding="utf-8",
    )
    (tmp_path / "filter.html.j2").write_text(
        '{% extends "base.html.j2" %}{% block subject %}Hi {{ lead.industry | artcle }}'
        "{% endblock %}{% block content %}<p>x</p>{% endblock %}",
        encoding="utf-8",
    )
    templates = TemplateSet(tmp_path)

    assert templates.check("ok") == []
    assert next(p.message for p in templates.check("typo")) == (
        "unknown field lead.industry_lable (did you mean 'lead.industry_label'?)"
    )
    assert [p.message for p in templates.check("filter")] == [
        "syntax error: No filter named 'artcle'."
    ]


def test_labels_for_a_field_without_labels_is_an_error() -> None:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8").replace(
        "labels:\n  industry:", "labels:\n  industy:"
    )

    with pytest.raises(ConfigError) as caught:
        load_config(Path("pipeline.yaml"), templates=TEMPLATES, text=text)

    assert [i.message for i in caught.value.issues] == [
        "no labels for 'industy' (did you mean 'industry'?); labels are given for: "
        "industry, country"
    ]


def test_preview_shows_the_sample_lead_with_its_label(cli) -> None:
    code, out, _ = cli("preview", "case_study")

    assert code == 0
    assert "Subject: How a Logistics team cut follow-up time in half" in out
    assert "in touch with Acme Analytics Inc. Not interested?" in " ".join(out.split())
