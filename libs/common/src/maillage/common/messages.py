"""What the APIs say to people, in French; what they say to programs stays stable English.

The rule (docs/architecture.md, "Who reads which language"): a problem document's ``title`` and
``detail``, each validation error's ``detail``, and every other text an API returns for a person
to read are French, because the people who read them are French. The machine parts beside them
are stable English identifiers and never change with wording: ``code``, ``type``, each error's
``type`` and ``pointer``, field names and enum values. A client switches on ``code``, and shows
``title`` and ``detail``. The developer documentation (OpenAPI and AsyncAPI descriptions, README,
docs/), logs and CLI output stay in English, the project's working language.

This module holds the texts the chassis writes itself: the title of each plain HTTP status, and
the French wording of pydantic's validation errors (pydantic has no French of its own; its error
``type`` and context carry everything needed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

STATUS_TITLES: Mapping[int, str] = {
    400: "Requête incorrecte",
    401: "Authentification requise",
    403: "Accès refusé",
    404: "Introuvable",
    405: "Méthode non permise",
    406: "Format de réponse non disponible",
    409: "Conflit",
    410: "N'existe plus",
    413: "Requête trop volumineuse",
    415: "Type de contenu non pris en charge",
    422: "Requête non valide",
    429: "Trop de requêtes",
    500: "Erreur interne",
    503: "Service indisponible",
}


def status_title(status: int) -> str:
    """The French title of a plain HTTP error status (a 4xx or 5xx not listed: its family's)."""
    return STATUS_TITLES.get(status) or (
        "Erreur du serveur" if status >= 500 else "Requête refusée"
    )


# A status code (an English identifier, kept as is in the problem's own fields) → how a French
# text names it. The labels qualify « statut » or « état » (masculine): « au statut vérifié ».
STATUS_LABELS: Mapping[str, str] = {
    # registry: partners
    "pending": "en attente de vérification",
    "verified": "vérifié",
    "rejected": "refusé",
    "suspended": "suspendu",
    # cordées: offers, match requests, pairings
    "open": "ouvert",
    "requested": "demandé",
    "proposed": "proposé",
    "unmatched": "sans proposition",
    "established": "encordé",
    "active": "actif",
    "ended": "terminé",
    # stages de 3e: offers, applications
    "published": "publié",
    "unpublished": "dépublié",
    "submitted": "envoyé",
    "confirmed": "confirmé",
    "declined": "décliné",
    "expired": "expiré",
    # several
    "withdrawn": "retiré",
    "closed": "clos",
    "cancelled": "annulé",
    "accepted": "accepté",
    # funding: conventions, tranches, reports
    "draft": "brouillon",
    "instructing": "en instruction",
    "programmed": "programmé",
    "signed": "signé",
    "planned": "prévu",
    "instructed": "instruit",
    "approved": "approuvé",
    "paid": "payé",
    "filed": "déposé",
    "changes_requested": "à compléter",
}
ACTION_LABELS: Mapping[str, str] = {
    "open_envelope": "ouvrir l'enveloppe",
    "record": "enregistrer",
    "instruct": "instruire",
    "programme": "programmer",
    "sign": "signer",
    "cancel": "annuler",
    "close": "clore",
    "approve": "approuver",
    "reject": "rejeter",
    "pay": "payer",
    "receive_reversement": "enregistrer le reversement",
    "accept_report": "accepter le compte-rendu",
    "return_report": "renvoyer le compte-rendu",
    "request": "demander",
    "file_report": "déposer le compte-rendu",
}


def status_label(status: object) -> str:
    """« vérifié » for ``verified``: how a French text names a status (issue: a detail read
    "au statut verified"). The code itself goes into the problem's own field, unchanged."""
    code = str(getattr(status, "value", status))
    return STATUS_LABELS.get(code, code)


def action_label(action: str) -> str:
    """« payer » for ``pay``: how a French text names a funding action."""
    return ACTION_LABELS.get(action, action)


def _choices(context: Mapping[str, Any]) -> str:
    # pydantic writes its choices "'a', 'b' or 'c'".
    return str(context.get("expected", "")).replace(" or ", " ou ")


def _plural(count: Any, one: str, many: str) -> str:
    return f"{count} {one if count in (0, 1) else many}"


_WHOLE = "Un nombre entier est attendu."
_NUMBER = "Un nombre est attendu."
_BOOLEAN = "Un booléen est attendu (true ou false)."
_OBJECT = "Un objet JSON est attendu."
_LIST = "Une liste est attendue."
_DATE = "Une date est attendue (AAAA-MM-JJ)."
_DATETIME = "Une date et une heure ISO 8601 sont attendues (2026-09-01T08:00:00+02:00)."
_UUID = "Un identifiant UUID est attendu."
_URL = "Une URL valide est attendue."

# pydantic error type → its French wording, from the error's context.
_VALIDATION: Mapping[str, Callable[[Mapping[str, Any]], str]] = {
    "missing": lambda _: "Ce champ est obligatoire.",
    "extra_forbidden": lambda _: "Ce champ n'est pas accepté ici.",
    "string_type": lambda _: "Une chaîne de caractères est attendue.",
    "string_unicode": lambda _: "Le texte n'est pas de l'Unicode valide.",
    "string_too_short": lambda c: (
        f"Au moins {_plural(c.get('min_length'), 'caractère', 'caractères')}."
    ),
    "string_too_long": lambda c: (
        f"Au plus {_plural(c.get('max_length'), 'caractère', 'caractères')}."
    ),
    "string_hidden_character": lambda c: (
        f"Le texte contient un caractère invisible ou de contrôle ({c.get('character')}) : "
        "retirez-le."
    ),
    "string_pattern_mismatch": lambda c: f"Le format n'est pas celui attendu ({c.get('pattern')}).",
    "too_short": lambda c: f"Au moins {_plural(c.get('min_length'), 'élément', 'éléments')}.",
    "too_long": lambda c: f"Au plus {_plural(c.get('max_length'), 'élément', 'éléments')}.",
    "int_type": lambda _: _WHOLE,
    "int_parsing": lambda _: _WHOLE,
    "int_parsing_size": lambda _: "Ce nombre entier est trop grand.",
    "int_from_float": lambda _: "Un nombre entier est attendu, sans partie décimale.",
    "float_type": lambda _: _NUMBER,
    "float_parsing": lambda _: _NUMBER,
    "decimal_type": lambda _: _NUMBER,
    "decimal_parsing": lambda _: _NUMBER,
    "finite_number": lambda _: "Un nombre fini est attendu.",
    "bool_type": lambda _: _BOOLEAN,
    "bool_parsing": lambda _: _BOOLEAN,
    "greater_than": lambda c: f"Doit être strictement supérieur à {c.get('gt')}.",
    "greater_than_equal": lambda c: f"Doit être supérieur ou égal à {c.get('ge')}.",
    "less_than": lambda c: f"Doit être strictement inférieur à {c.get('lt')}.",
    "less_than_equal": lambda c: f"Doit être inférieur ou égal à {c.get('le')}.",
    "multiple_of": lambda c: f"Doit être un multiple de {c.get('multiple_of')}.",
    "literal_error": lambda c: f"Valeur non prévue : {_choices(c)} attendu.",
    "enum": lambda c: f"Valeur non prévue : {_choices(c)} attendu.",
    "uuid_type": lambda _: _UUID,
    "uuid_parsing": lambda _: _UUID,
    "uuid_version": lambda _: _UUID,
    "date_type": lambda _: _DATE,
    "date_parsing": lambda _: _DATE,
    "date_from_datetime_parsing": lambda _: _DATE,
    "date_from_datetime_inexact": lambda _: _DATE,
    "datetime_type": lambda _: _DATETIME,
    "datetime_parsing": lambda _: _DATETIME,
    "datetime_from_date_parsing": lambda _: _DATETIME,
    "timezone_aware": lambda _: "L'heure porte son fuseau horaire (par exemple +02:00 ou Z).",
    "timezone_naive": lambda _: "L'heure ne porte pas de fuseau horaire.",
    "dict_type": lambda _: _OBJECT,
    "model_type": lambda _: _OBJECT,
    "model_attributes_type": lambda _: _OBJECT,
    "list_type": lambda _: _LIST,
    "tuple_type": lambda _: _LIST,
    "set_type": lambda _: _LIST,
    "frozen_set_type": lambda _: _LIST,
    "set_item_not_hashable": lambda _: "Un élément de cette liste n'est pas une valeur simple.",
    "json_invalid": lambda _: "Le JSON est mal formé.",
    "json_type": lambda _: "Une chaîne JSON est attendue.",
    "url_type": lambda _: _URL,
    "url_parsing": lambda _: _URL,
    "url_syntax_violation": lambda _: _URL,
    "url_too_long": lambda c: f"L'URL a au plus {c.get('max_length')} caractères.",
    "url_scheme": lambda c: f"Le schéma de l'URL est {_choices(c)}.",
    "none_required": lambda _: "Ce champ doit être null.",
    "union_tag_invalid": lambda _: "Type d'objet non reconnu.",
    "union_tag_not_found": lambda _: "Le champ qui donne le type de l'objet manque.",
    # Our own validators raise ValueError with a French sentence: that sentence is the text.
    "value_error": lambda c: str(c.get("error", "Valeur non valide.")),
    "assertion_error": lambda c: str(c.get("error", "Valeur non valide.")),
}


def validation_message(error: Mapping[str, Any]) -> str:
    """The French text of one pydantic error (``{"type", "ctx", ...}``); its ``type`` stays the
    machine code. A type this table does not know yet gets a generic French sentence."""
    wording = _VALIDATION.get(str(error.get("type")))
    if wording is None:
        return "Valeur non valide."
    return wording(error.get("ctx") or {})
