"""Secrets sealed for one service (decision 63): what is sealed opens with the matching private key
and its context only; any change to the sealed value, the context or the key fails, and the
failure never carries the secret."""

from __future__ import annotations

import base64
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maillage.common import sealing
from maillage.common.catalog import school_claim_seal_context

PRIVATE = sealing.generate_private_pem()
OTHER = sealing.generate_private_pem()
SEAL = sealing.SealingKey.from_pem(sealing.public_pem(PRIVATE))
OPEN = sealing.OpeningKeys.from_pems([PRIVATE])

secrets_ = st.text(min_size=1, max_size=64)
contexts = st.binary(max_size=128)


@settings(max_examples=200, deadline=None)
@given(secret=secrets_, context=contexts)
def test_what_is_sealed_opens_with_its_key_and_context(secret: str, context: bytes) -> None:
    sealed = SEAL.seal(secret, context)
    assert sealed.startswith(f"{SEAL.key_id}.")
    assert OPEN.open(sealed, context) == secret
    # Sealing is randomised: the same secret never gives the same value twice.
    assert SEAL.seal(secret, context) != sealed


@settings(max_examples=200, deadline=None)
@given(secret=secrets_, context=contexts, data=st.data())
def test_any_change_to_the_sealed_bytes_fails(
    secret: str, context: bytes, data: st.DataObject
) -> None:
    sealed = SEAL.seal(secret, context)
    kid, body = sealed.split(".")
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    where = data.draw(st.integers(0, len(raw) - 1))
    raw[where] ^= data.draw(st.integers(1, 255))
    altered = f"{kid}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"
    with pytest.raises(sealing.Unopenable) as refused:
        OPEN.open(altered, context)
    # The reason is a fixed sentence naming the key: never the secret.
    assert str(refused.value) == (
        f"the value sealed for key {kid} does not open: altered, or bound to another claim, "
        "partner or mailbox"
    )


@settings(max_examples=200, deadline=None)
@given(secret=secrets_, context=contexts, data=st.data())
def test_a_cut_or_lengthened_value_fails(secret: str, context: bytes, data: st.DataObject) -> None:
    sealed = SEAL.seal(secret, context)
    cut = sealed[: data.draw(st.integers(0, len(sealed) - 1))]
    longer = sealed + data.draw(
        st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=8)
    )
    for altered in (cut, longer):
        with pytest.raises(sealing.Unopenable):
            OPEN.open(altered, context)


@settings(max_examples=100, deadline=None)
@given(secret=secrets_, context=contexts, other=contexts)
def test_another_context_fails(secret: str, context: bytes, other: bytes) -> None:
    if other == context:
        return
    with pytest.raises(sealing.Unopenable):
        OPEN.open(SEAL.seal(secret, context), other)


def test_another_key_fails_and_says_which_key_it_was_sealed_for() -> None:
    stranger = sealing.SealingKey.from_pem(sealing.public_pem(OTHER))
    with pytest.raises(sealing.Unopenable, match=stranger.key_id) as refused:
        OPEN.open(stranger.seal("12345678", b"claim"), b"claim")
    assert "12345678" not in str(refused.value)
    # Even under our key id, bytes sealed for another key do not open.
    _, body = stranger.seal("12345678", b"claim").split(".")
    with pytest.raises(sealing.Unopenable, match="does not open"):
        OPEN.open(f"{SEAL.key_id}.{body}", b"claim")


def test_a_retired_key_still_opens_during_a_rotation() -> None:
    both = sealing.OpeningKeys.from_pems([OTHER, PRIVATE])
    assert both.open(SEAL.seal("12345678", b"claim"), b"claim") == "12345678"
    assert both.key_ids == {
        SEAL.key_id,
        sealing.SealingKey.from_pem(sealing.public_pem(OTHER)).key_id,
    }


def test_a_claim_code_is_bound_to_its_claim_partner_and_mailbox() -> None:
    claim_id, partner_id = uuid.uuid4(), uuid.uuid4()
    mailbox = "ce.0940123Y@ac-creteil.fr"
    sealed = SEAL.seal("04719263", school_claim_seal_context(claim_id, partner_id, mailbox))
    assert OPEN.open(sealed, school_claim_seal_context(claim_id, partner_id, mailbox)) == "04719263"
    for moved in (
        school_claim_seal_context(uuid.uuid4(), partner_id, mailbox),
        school_claim_seal_context(claim_id, uuid.uuid4(), mailbox),
        school_claim_seal_context(claim_id, partner_id, "mallory@example.org"),
    ):
        with pytest.raises(sealing.Unopenable):
            OPEN.open(sealed, moved)


@pytest.mark.parametrize(
    "pem",
    [
        "",
        "not a key",
        sealing.public_pem(PRIVATE),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
    ],
)
def test_a_private_key_that_is_not_x25519_pem_is_refused(pem: str) -> None:
    with pytest.raises(sealing.SealingKeyError):
        sealing.OpeningKeys.from_pems([pem])


def test_a_public_key_that_is_not_x25519_pem_is_refused() -> None:
    with pytest.raises(sealing.SealingKeyError):
        sealing.SealingKey.from_pem(PRIVATE)
    with pytest.raises(sealing.SealingKeyError):
        sealing.SealingKey.from_pem("é")
