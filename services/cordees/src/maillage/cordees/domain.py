"""Pure rules of the Cordées de la réussite: no I/O, no framework.

A tête de cordée (university, grande école, lycée with CPGE/STS) mentors encordés (collèges and
lycées). The national objective serves every REP+ collège first, then every REP collège.
"""

from enum import IntEnum


class PriorityClass(IntEnum):
    """The national priority of an encordé, lower is served first."""

    REP_PLUS = 1
    REP = 2
    QPV_OR_RURAL = 3
    OTHER = 4
