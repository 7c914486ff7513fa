"""Numbers and booleans a client sends are JSON numbers and booleans, nothing else.

pydantic's lax mode reads ``true`` as the integer 1, ``"100"`` as 100 and ``1`` as ``true``: a
comptable paid a tranche one cent with ``"amount_cents": true``. Every integer, number and
boolean field of a request body uses these types instead of ``int``, ``float`` and ``bool``;
``tests/test_request_kinds.py`` walks every service's body models and fails on any that does
not. FastAPI validates the parsed document in Python mode, so the strictness is per field (a
model-wide ``strict=True`` would refuse the strings that carry UUIDs and dates). The OpenAPI
types stay ``integer``, ``number`` and ``boolean``. Refusals are 422 ``validation_failed``
(``int_type``, ``float_type``, ``bool_type``, worded in French by ``messages``).

- :data:`Int` refuses ``true``, ``"1"`` and ``1.0``;
- :data:`Float` takes ``1`` and ``1.5``, refuses ``true`` and ``"1.5"``;
- :data:`Bool` refuses ``1``, ``"true"`` and ``"yes"``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Strict

Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
