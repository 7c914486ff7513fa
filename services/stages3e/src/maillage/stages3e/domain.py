"""Pure rules of the stages de 3e: no I/O, no framework.

A partner publishes a one-week observation internship offer; a school applies for a pupil it
refers to by an opaque reference of its own (pupils are minors: no names leave the school).
"""

from enum import StrEnum

STAGE_LENGTH_DAYS = 5  # one school week of observation


class OfferStatus(StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    CLOSED = "closed"
