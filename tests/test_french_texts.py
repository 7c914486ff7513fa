"""What the APIs say to people is French; what they say to programs is stable English.

The rule is ``maillage.common.messages``'s (and docs/architecture.md's "Who reads which
language"). This test reads the source of every service and of the chassis and checks the texts
that reach a person through an API answer:

* a :class:`Problem`'s ``title`` and ``detail``;
* the messages of the refusals that become a problem's ``detail`` or an error's ``detail``:
  ``UnsafeUrl`` (webhook URLs), ``InvalidIdentifier`` and ``FieldError`` (registry);
* the ``ValueError`` messages of the pydantic validators of request models (they become a
  validation error's ``detail``; settings' validators, in ``app.py``, speak to operators);
* the French wording of every pydantic error type and each event's description in
  ``GET /preferences``.

A text passes when none of its words is one that only English has (``the``, ``is``, ``must``…):
a tripwire for English sentences, not a grammar check. Machine codes (``partner_exists``) are
literal strings elsewhere in the call and are not read.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from maillage.common import messages
from maillage.notifications import domain as notifications

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    [*ROOT.glob("services/*/src/maillage/*/**/*.py"), *ROOT.glob("libs/common/src/**/*.py")]
)
# Words only English has (none is a French word, nor an identifier these texts quote).
ENGLISH = frozenset(
    {
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "must",
        "should",
        "cannot",
        "not",
        "no",
        "with",
        "without",
        "of",
        "and",
        "your",
        "you",
        "this",
        "that",
        "these",
        "those",
        "only",
        "already",
        "found",
        "has",
        "have",
        "does",
        "which",
        "when",
        "where",
        "please",
        "retry",
        "first",
        "yours",
        "than",
        "to",
        "for",
        "it",
        "its",
        "by",
        "at",
        "least",
        "nothing",
        "send",
        "field",
        "fields",
        "unknown",
        "name",
        "give",
        "either",
        "neither",
        "from",
        "into",
        "if",
        "they",
        "their",
        "there",
        "we",
        "our",
        "any",
        "more",
        "after",
        "before",
        "between",
        "about",
        "over",
        "would",
        "could",
        "will",
        "might",
        "used",
    }
)
# Call → which of its arguments are texts for people: positional indexes and keyword names.
TEXT_ARGUMENTS = {
    "Problem": ((2,), ("detail",)),
    "UnsafeUrl": ((1,), ()),
    "InvalidIdentifier": ((1,), ()),
    "FieldError": ((1,), ()),
    "_unauthenticated": ((0,), ()),
    "_forbidden": ((0,), ()),
    "_conflict": ((1, 2), ()),
}
VALIDATORS = {"field_validator", "model_validator"}


def english_words(text: str) -> set[str]:
    """The English-only words of ``text``; identifiers (``next_attempt_at``, paths) are skipped."""
    words = (token for token in re.findall(r"[\w'./:{}=?-]+", text.lower()) if token.isalpha())
    return {word for word in words if word in ENGLISH}


def literal_text(node: ast.expr) -> str:
    """The constant parts of a string expression (f-string holes left out)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return " ".join(literal_text(value) for value in node.values)
    if isinstance(node, ast.BinOp):
        return f"{literal_text(node.left)} {literal_text(node.right)}"
    if isinstance(node, ast.IfExp):
        return f"{literal_text(node.body)} {literal_text(node.orelse)}"
    return ""


def _name(call: ast.Call) -> str:
    function = call.func
    return function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")


def _validated_functions(tree: ast.Module) -> set[str]:
    """Functions used as pydantic validators of request models, decorated or assigned."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(
            isinstance(d, ast.Call) and _name(d) in VALIDATORS for d in node.decorator_list
        ):
            names.add(node.name)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Call)
            and _name(node.func) in VALIDATORS  # field_validator("x")(_check)
        ):
            names.update(a.id for a in node.args if isinstance(a, ast.Name))
    return names


def texts_for_people(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # Settings' validators speak to operators starting a service, in English.
    validators = _validated_functions(tree) if path.stem not in ("app", "settings") else set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _name(node) in TEXT_ARGUMENTS:
            positions, keywords = TEXT_ARGUMENTS[_name(node)]
            for index in positions:
                if index < len(node.args):
                    yield node.lineno, literal_text(node.args[index])
            for keyword in node.keywords:
                if keyword.arg in keywords:
                    yield node.lineno, literal_text(keyword.value)
        if isinstance(node, ast.FunctionDef) and node.name in validators:
            for inner in ast.walk(node):
                if (
                    isinstance(inner, ast.Raise)
                    and isinstance(inner.exc, ast.Call)
                    and _name(inner.exc) == "ValueError"
                    and inner.exc.args
                ):
                    yield inner.lineno, literal_text(inner.exc.args[0])


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_text_an_api_shows_people_is_french(path: Path) -> None:
    english = [
        f"{path.relative_to(ROOT)}:{line}: {text!r} ({', '.join(sorted(words))})"
        for line, text in texts_for_people(path)
        if (words := english_words(text))
    ]
    assert not english, "English where people read French:\n" + "\n".join(english)


def test_the_reader_finds_the_texts() -> None:
    """The scan sees the problems it is about: an empty scan would pass anything."""
    found = [text for path in SOURCES for _, text in texts_for_people(path)]
    assert len(found) > 100
    assert "Partenaire déjà inscrit" in found
    assert english_words("A partner with this SIRET is already registered") == {
        "is",
        "already",
        "this",
        "with",
    }


def test_every_validation_error_type_reads_french() -> None:
    for kind, wording in messages._VALIDATION.items():
        context = {
            "min_length": 2,
            "max_length": 3,
            "gt": 0,
            "ge": 0,
            "lt": 9,
            "le": 9,
            "multiple_of": 2,
            "pattern": "^x$",
            "expected": "'a', 'b' or 'c'",
            "error": ValueError("Texte de notre validateur."),
        }
        text = wording(context)
        assert text.endswith("."), kind
        assert not english_words(text), (kind, text)
    assert messages.validation_message({"type": "a_type_to_come"}) == "Valeur non valide."


def test_each_event_a_partner_hears_of_is_described_in_french() -> None:
    assert set(notifications.DESCRIPTIONS) == set(notifications.AUDIENCES)
    for event_type, text in notifications.DESCRIPTIONS.items():
        assert "\n" not in text, event_type
        assert "``" not in text, event_type  # no reStructuredText
        assert text[0].isupper(), event_type
        assert text.endswith("."), event_type
        assert not english_words(text), (event_type, text)


SERVICES = ("registry", "cordees", "stages3e", "funding", "notifications")
RST = re.compile(r"\n {2,}\S|``|:(class|func|mod|attr|meth):`")


@pytest.mark.parametrize("service", SERVICES)
def test_openapi_descriptions_are_plain_markdown(service: str) -> None:
    """Developer documentation stays English, but reads as Markdown: no docstring indentation
    left in, no reStructuredText (``x``, :class:`x`)."""
    module = importlib.import_module(f"maillage.{service}.app")
    settings_class = next(
        value
        for name, value in vars(module).items()
        if name.endswith("Settings") and getattr(value, "__module__", "") == module.__name__
    )
    settings = settings_class(environment="test", database_url="postgresql://n@127.0.0.1:1/n")
    found: list[str] = []

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str) and key == "description" and RST.search(value):
                    found.append(f"{where}: {value[:100]!r}")
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(module.create(settings).openapi(), "")
    assert not found, "\n".join(found)


TEMPLATES = ROOT / "services/notifications/src/maillage/notifications/templates"
# French typography: a non-breaking space before « : ; ! ? » (a narrow one is also accepted), so a
# mail never wraps a line before its colon. A plain space there is a typo someone will reintroduce.
PLAIN_SPACE_BEFORE_PUNCTUATION = re.compile(r"[\wÀ-ÿ}»)] [:;!?](?=[\s{<]|$)", re.MULTILINE)


def test_mail_templates_keep_a_non_breaking_space_before_double_punctuation() -> None:
    offenders = [
        f"{path.relative_to(TEMPLATES)}: {match.group()!r}"
        for path in sorted(TEMPLATES.rglob("*.jinja"))
        for match in PLAIN_SPACE_BEFORE_PUNCTUATION.finditer(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


STATUS_ENUMS = (
    ("registry", "PartnerStatus"),
    ("funding", "ConventionStatus"),
    ("funding", "TrancheStatus"),
    ("stages3e", "OfferStatus"),
    ("stages3e", "ApplicationStatus"),
)
# Statuses kept as text columns (a CHECK in the migrations) rather than an enum.
OTHER_STATUSES = (
    *("open", "closed", "requested", "proposed", "unmatched", "withdrawn", "established"),
    *("active", "ended"),  # cordées
    *("filed", "accepted", "changes_requested"),  # funding reports
)


@pytest.mark.parametrize(("service", "name"), STATUS_ENUMS)
def test_every_status_has_a_french_label(service: str, name: str) -> None:
    """A French text names a status by its label ("au statut vérifié"), never by its code."""
    enum = getattr(importlib.import_module(f"maillage.{service}.domain"), name)
    unlabelled = [status.value for status in enum if status.value not in messages.STATUS_LABELS]
    assert unlabelled == []
    assert messages.status_label(enum(next(iter(enum)).value)) != next(iter(enum)).value


def test_statuses_without_an_enum_and_funding_actions_have_french_labels() -> None:
    assert [status for status in OTHER_STATUSES if status not in messages.STATUS_LABELS] == []
    from maillage.funding.domain import ACTION_ROLES

    assert [action for action in ACTION_ROLES if action not in messages.ACTION_LABELS] == []
    assert messages.status_label("verified") == "vérifié"


def test_no_text_names_a_status_by_its_code() -> None:
    """``statut {status}`` in an f-string shows the English code: ``status_label`` it."""
    raw = re.compile(r"(statut|état »?|état «) \{(?!status_label|messages\.status_label)")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in SOURCES
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if raw.search(line) or re.search(r"l'état « \{(?!status_label)", line)
    ]
    assert found == []
