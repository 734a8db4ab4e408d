"""Model cards: Markdown to HTML that is safe to put in a page.

A model card is written by whoever uploaded the version, so it is untrusted. Raw HTML in
the Markdown is shown as text rather than interpreted, and the HTML Markdown produces is
then cleaned with nh3 against a short allow-list, so nothing executable reaches the page
even if the first step missed something.
"""

import markdown as md
import nh3
from django.utils.safestring import SafeString, mark_safe

ALLOWED_TAGS = {
    "p",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "ul",
    "ol",
    "li",
    "strong",
    "em",
    "code",
    "pre",
    "blockquote",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "hr",
    "br",
}
ALLOWED_ATTRIBUTES = {"a": {"href"}}
URL_SCHEMES = {"http", "https", "mailto"}
LINK_REL = "noopener noreferrer nofollow"
# Markdown length beyond this is not rendered; cards are short documents.
MAX_CARD_CHARS = 200_000


def _converter() -> md.Markdown:
    converter = md.Markdown(extensions=["tables", "fenced_code", "sane_lists"])
    # Without these, raw HTML blocks and inline tags are escaped as text, not passed on.
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    return converter


def sanitize(html: str) -> str:
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel=LINK_REL,
        url_relative="deny",
        strip_comments=True,
    )


def render_model_card(text: str | None) -> SafeString:
    """The card's Markdown as sanitized HTML, ready for a template."""
    if not text:
        return mark_safe("")
    html = _converter().convert(text[:MAX_CARD_CHARS])
    return mark_safe(sanitize(html))  # noqa: S308 - cleaned by nh3 against an allow-list
