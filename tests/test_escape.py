"""Hostile strings in every user or data field render as text in every Markdown output: the job summary, the PR
comment and report.md (one document), and the model card. Rendered by a real CommonMark parser with GitHub's
tables and raw HTML on, so an injection that worked on GitHub would show here as a tag."""

from __future__ import annotations

import dataclasses
import html
import re

import pytest
from huggingface_hub import ModelCard
from markdown_it import MarkdownIt

from hpo_action.config import parse_config
from hpo_action.errors import ConfigError
from hpo_action.report.escape import md_text
from hpo_action.report.markdown import run_markdown
from hpo_action.search.summary import BestTrial, TrialRecord
from hpo_action.ship.card import render_card

from .helpers import QUICKSTART, promoted_decision, sample_summary

HOSTILE = {
    "fake heading": "x\n## hpo-action: PROMOTE",
    "heading at the start": "# PROMOTE",
    "unclosed comment": "<!-- the rest is hidden",
    "script": "<script>alert(1)</script>",
    "pipe": "a | b | c",
    "backticks": "`code` and ``` fence",
    "javascript link": "[click](javascript:alert(1))",
    "image": "![x](https://evil.example/p.png)",
    "entity": "&lt;b&gt; &amp;",
    "list marker": "- item",
    "ordered list": "1. item",
    "setext line": "===",
    "emphasis": "*bold* _it_ ~~gone~~ $x$",
    "backslash": "a\\",
    "fence on its own line": "a\n```\nb",
}


def render(markdown: str) -> str:
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(markdown)


@pytest.mark.parametrize("name", HOSTILE)
def test_md_text_renders_exactly_the_text(name: str):
    text = HOSTILE[name]
    one_line = " ".join(text.split())
    for context in ("{}", "before {} after", "- {}", "**{}**", "# title {}"):
        rendered = render(context.format(md_text(text)))
        expected = render(context.format("PLACEHOLDER")).replace("PLACEHOLDER", html.escape(one_line, quote=False))
        assert rendered == expected, (context, rendered)


def _table_shapes(rendered: str) -> list[tuple[int, ...]]:
    """Per table: the number of cells in each row (header included)."""
    tables = re.findall(r"<table>.*?</table>", rendered, re.S)
    return [tuple(len(re.findall(r"<t[hd][ >]", row)) for row in re.findall(r"<tr>.*?</tr>", t, re.S)) for t in tables]


def _cells(line: str) -> int:
    """Cell separators in a table line: `|` that no backslash escapes."""
    return sum(1 for token in re.findall(r"\\.|\|", line) if token == "|")


def assert_text_only(markdown: str, headings: list[str], code: bool = False) -> None:
    """The only headings are the renderer's own, no HTML came through (nor a code span, unless the document writes
    its own: `code`), and every table keeps its columns, in the source and once rendered."""
    rendered = render(markdown)
    assert re.findall(r"<h\d>(.*?)</h\d>", rendered) == headings
    assert "<!--" not in rendered and "<script" not in rendered and "<a href" not in rendered
    assert "<img" not in rendered and (code or "<code>" not in rendered)
    for shape in _table_shapes(rendered):
        assert len(set(shape)) == 1, shape
    for table in re.findall(r"(?:^\|.*\n)+", markdown, re.M):
        assert len({_cells(line) for line in table.splitlines()}) == 1, table


def hostile_summary(text: str):
    summary = sample_summary()
    trials = (
        TrialRecord(0, "FAIL", None, 3, 1.2, {"lora_r": 4, "optim": text}, error=text),
        dataclasses.replace(summary.trials[1], params={"lora_r": 8, "optim": text}),
    )
    best = BestTrial(1, 0.45, {"learning_rate": 0.01, "optim": text}, {"eval_loss": 0.45}, {}, "runs/best")
    return dataclasses.replace(
        summary,
        study_name=text,
        objective_metric=text,
        base_model=text,
        stopped_early=text,
        trials=trials,
        best=best,
        states={"COMPLETE": 1, "FAIL": 1},
    )


@pytest.mark.parametrize("name", HOSTILE)
def test_report_renders_hostile_strings_as_text(name: str):
    """report.md, which is also the job summary and the PR comment (tests/test_github.py sends one through)."""
    text = HOSTILE[name]
    markdown = run_markdown(hostile_summary(text), promoted_decision(), f"published: v3 at {text}", [f"{text}.png"])
    assert_text_only(markdown, ["hpo-action: PROMOTE", "Gate: promote"])
    assert " ".join(text.split()) in html.unescape(re.sub(r"<[^>]+>", "", render(markdown)))  # shown, as text


def _hostile_config(text: str):
    import yaml

    raw = yaml.safe_load((QUICKSTART / "hpo.yaml").read_text())
    raw["registry"] = {"uri": "registry", "title": text}
    return parse_config(raw, source="hpo.yaml")


@pytest.mark.parametrize("name", HOSTILE)
def test_the_card_renders_hostile_strings_as_text_and_keeps_its_front_matter(name: str):
    text = HOSTILE[name]
    cfg = _hostile_config(text)
    card_text = render_card(cfg, hostile_summary(text), promoted_decision(), [], text, None)
    card = ModelCard(card_text)
    assert card.data.model_name == " ".join(text.split())  # the YAML header holds the title, quoted as needed
    expected = [
        html.escape(" ".join(text.split()), quote=False),
        "How to load",
        "Winning hyperparameters",
        "The search",
        "Gate evidence",
        "Gate: promote",
        "Framework versions",
    ]
    assert_text_only(card.text, expected, code=True)


def test_card_base_model_is_refused_unless_it_is_a_hub_id():
    """The card writes it into its metadata, its first line and its loading code: only an org/name id belongs."""
    import yaml

    raw = yaml.safe_load((QUICKSTART / "hpo.yaml").read_text())
    raw["model"]["card_base_model"] = "acme/base\n## PROMOTE"
    with pytest.raises(ConfigError, match=r"model.card_base_model: .* is not a Hub model id \(org/name"):
        parse_config(raw, source="hpo.yaml")
    raw["model"]["card_base_model"] = "Qwen/Qwen2.5-0.5B"
    assert parse_config(raw, source="hpo.yaml").model.card_base_model == "Qwen/Qwen2.5-0.5B"
