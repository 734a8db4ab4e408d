"""Content-Security-Policy violations seen in Chromium, recorded for every browser test.

Two witnesses, so neither's blind spot hides one: each page's `securitypolicyviolation`
events (reported through a Playwright binding, which outlives navigations) and Chromium's
console lines naming the policy. Both are installed through the DevTools protocol, which the
page's own policy does not govern.
"""

import contextlib
from dataclasses import dataclass, field

# Redoc draws Redocly's logo from their CDN in every build; img-src refuses it on purpose
# (tests/test_docs.py checks that it was the only request held back).
EXPECTED = ("https://cdn.redoc.ly/",)

LISTENER = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolation({
    page: document.location.href,
    directive: event.effectiveDirective,
    blocked: event.blockedURI,
    source: event.sourceFile + ":" + event.lineNumber,
    sample: event.sample,
  });
}, true);
"""


@dataclass
class Violations:
    events: list[dict] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def watch(self, context) -> None:
        context.expose_binding("__cspViolation", lambda source, report: self._event(report))
        context.add_init_script(LISTENER)
        context.on("console", self._console)

    def _event(self, report: dict) -> None:
        if not str(report.get("blocked", "")).startswith(EXPECTED):
            self.events.append(report)

    def _console(self, message) -> None:
        text = message.text
        if "Content Security Policy" in text and not any(url in text for url in EXPECTED):
            self.console.append(f"{message.page.url if message.page else '?'}: {text}")

    def __bool__(self) -> bool:
        return bool(self.events or self.console)

    def __str__(self) -> str:
        return "\n".join([*map(str, self.events), *self.console])


def flush(context) -> None:
    """A round trip to each open page, so reports already sent have arrived."""
    for page in context.pages:
        # a closed or crashed page has nothing more to say
        with contextlib.suppress(Exception):
            page.evaluate("0")


class Contexts:
    """Opens browser contexts (call it) that record violations; `seen()` lists them all."""

    def __init__(self, browser):
        self.browser = browser
        self.opened: list[tuple[object, Violations]] = []

    def __call__(self):
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(20_000)
        violations = Violations()
        violations.watch(context)
        self.opened.append((context, violations))
        return context

    def seen(self) -> list[str]:
        for context, _ in self.opened:
            flush(context)
        return [str(violations) for _, violations in self.opened if violations]

    def close(self) -> None:
        for context, _ in self.opened:
            context.close()
