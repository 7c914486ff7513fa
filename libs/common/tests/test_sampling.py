"""Head sampling and what gets a span: the sampler, the statement filter, failure spans
(decision 50). Pure units: no broker, no database."""

from __future__ import annotations

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from maillage.common.settings import (
    PRODUCTION_TRACE_SAMPLE_RATIO,
    ServiceSettings,
    service_config,
)
from maillage.common.telemetry import (
    FORCED,
    failure_span,
    in_span,
    is_bookkeeping,
    is_unsampled,
    record_failure,
    sampler_for,
)

trace_ids = st.integers(min_value=1, max_value=2**128 - 1)
ratios = st.floats(min_value=0.0, max_value=1.0)


def parent(trace_id: int, sampled: bool) -> otel_context.Context:
    """The context a ``traceparent`` header gives: a remote span, sampled or not."""
    span_context = SpanContext(
        trace_id=trace_id,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))


@settings(max_examples=200)
@given(ratio=ratios, trace_id=trace_ids, sampled=st.booleans())
def test_a_span_with_a_parent_follows_the_decision_its_traceparent_carries(
    ratio: float, trace_id: int, sampled: bool
) -> None:
    result = sampler_for(ratio).should_sample(parent(trace_id, sampled), trace_id, "span")
    assert (result.decision == Decision.RECORD_AND_SAMPLE) == sampled


@settings(max_examples=200)
@given(ratio=ratios, trace_id=trace_ids)
def test_a_root_is_kept_by_ratio_and_the_same_way_in_every_service(
    ratio: float, trace_id: int
) -> None:
    first = sampler_for(ratio).should_sample(None, trace_id, "root").decision
    again = sampler_for(ratio).should_sample(None, trace_id, "another root").decision
    assert first == again  # decided by the trace id alone
    if ratio == 0.0:
        assert first == Decision.DROP
    if ratio == 1.0:
        assert first == Decision.RECORD_AND_SAMPLE


@settings(max_examples=100)
@given(trace_id=trace_ids)
def test_a_forced_root_is_kept_even_at_ratio_zero(trace_id: int) -> None:
    result = sampler_for(0.0).should_sample(
        None, trace_id, "dead letter", attributes={FORCED: True}
    )
    assert result.decision == Decision.RECORD_AND_SAMPLE


@pytest.mark.parametrize("ratio", [-0.1, 1.5, float("nan")])
def test_a_ratio_outside_zero_to_one_is_refused(ratio: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        sampler_for(ratio)


def test_roughly_the_ratio_of_roots_is_kept() -> None:
    sampler = sampler_for(0.1)
    kept = sum(
        sampler.should_sample(None, (n * 0x9E3779B97F4A7C15) % 2**128, "r").decision
        == Decision.RECORD_AND_SAMPLE
        for n in range(1, 10_001)
    )
    assert 800 < kept < 1200


@pytest.mark.parametrize(
    "statement",
    [
        "BEGIN;",
        "BEGIN ISOLATION LEVEL SERIALIZABLE;",
        "begin",
        "COMMIT;",
        "ROLLBACK;",
        "SAVEPOINT _asyncpg_1;",
        "RELEASE SAVEPOINT _asyncpg_1;",
        "ROLLBACK TO SAVEPOINT _asyncpg_1;",
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        "SELECT pg_try_advisory_lock($1)",
        "  select pg_advisory_unlock($1);",
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0)), pg_notify($2, '')",
        # asyncpg's reset when a pooled connection is released
        "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;",
    ],
)
def test_transaction_control_locks_and_the_pool_reset_get_no_span(statement: str) -> None:
    assert is_bookkeeping(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO inbox (consumer_group, event_id, event_type) VALUES ($1, $2, $3)",
        # publish(): the lock is folded into the INSERT, which keeps its span
        "WITH locked AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtextextended($7, 0)))"
        " INSERT INTO outbox SELECT 1 FROM locked",
        "SELECT id FROM outbox WHERE published_at IS NULL",
        "SELECT pg_advisory_xact_lock($1); DELETE FROM things",
        "UPDATE begin_dates SET x = 1",
        "SELECT * FROM commits",
    ],
)
def test_statements_that_do_work_keep_their_span(statement: str) -> None:
    assert not is_bookkeeping(statement)


@settings(max_examples=200)
@given(
    verb=st.sampled_from(["INSERT", "UPDATE", "DELETE", "WITH", "SELECT count(*) FROM"]),
    rest=st.text(max_size=80),
)
def test_no_data_statement_is_taken_for_bookkeeping(verb: str, rest: str) -> None:
    assert not is_bookkeeping(f"{verb} {rest}")


def test_is_bookkeeping_takes_anything() -> None:
    assert not is_bookkeeping(None)
    assert not is_bookkeeping(b"BEGIN")


# --- unsampled traces: passed on as they are (decision 68) ----------------------------------------


@settings(max_examples=200)
@given(trace_id=trace_ids, span_id=st.integers(1, 2**64 - 1), flags=st.integers(0, 255))
def test_a_traceparent_is_unsampled_when_its_flags_say_so(
    trace_id: int, span_id: int, flags: int
) -> None:
    headers = {"ce_id": "x", "traceparent": f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"}
    assert is_unsampled(headers) == (not flags & 1)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"traceparent": ""},
        {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-00"},  # invalid trace id
        {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-00"},
        {"traceparent": "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},  # unknown
        {"traceparent": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-00"},  # upper case
        {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x"},
    ],
)
def test_what_is_not_a_valid_unsampled_traceparent_takes_the_ordinary_path(
    headers: dict[str, str],
) -> None:
    assert not is_unsampled(headers)


def test_in_span_makes_a_non_recording_span_current_and_nothing_else() -> None:
    span = NonRecordingSpan(
        SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=False)
    )
    seen: list[trace.Span] = []

    def handler() -> None:
        with in_span(span, end_on_exit=True) as current:
            seen.extend([current, trace.get_current_span()])
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError):
        handler()
    assert seen == [span, span]
    assert trace.get_current_span() is not span


def test_in_span_of_a_recorded_span_is_use_span(exported: InMemorySpanExporter) -> None:
    span = trace.get_tracer("test").start_span("recorded")

    def handler() -> None:
        with in_span(span, end_on_exit=True):
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError):
        handler()
    (finished,) = [s for s in exported.get_finished_spans() if s.name == "recorded"]
    assert finished.status.status_code == trace.StatusCode.ERROR
    assert [event.name for event in finished.events] == ["exception"]


# --- failure spans, on a provider of the test's own -----------------------------------------------


@pytest.fixture
def exported() -> InMemorySpanExporter:
    """Spans finished by the global provider (installed by the session, ratio 1) from now on."""
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def test_a_failure_in_an_unsampled_trace_is_a_root_linked_to_it(
    exported: InMemorySpanExporter,
) -> None:
    unsampled = parent(0x4BF92F3577B34DA6A3CE929D0E0E4736, sampled=False)
    token = otel_context.attach(unsampled)
    try:
        record_failure("relay failed", RuntimeError("broker down"), attributes={"service": "s"})
    finally:
        otel_context.detach(token)
    (span,) = [s for s in exported.get_finished_spans() if s.name == "relay failed"]
    assert span.parent is None
    assert span.context.trace_id != 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert [link.context.trace_id for link in span.links] == [0x4BF92F3577B34DA6A3CE929D0E0E4736]
    assert span.attributes is not None
    assert span.attributes[FORCED] is True
    assert span.attributes["service"] == "s"
    assert span.status.status_code == trace.StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


def test_a_failure_in_a_sampled_trace_stays_in_it(exported: InMemorySpanExporter) -> None:
    sampled = parent(0x0AF7651916CD43DD8448EB211C80319C, sampled=True)
    with failure_span("dlq.x publish", parent=sampled):
        pass
    (span,) = [s for s in exported.get_finished_spans() if s.name == "dlq.x publish"]
    assert span.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert span.parent is not None
    assert span.parent.span_id == 0x00F067AA0BA902B7
    assert span.attributes is not None
    assert FORCED not in span.attributes


def test_a_failure_outside_any_trace_is_a_root_without_link(
    exported: InMemorySpanExporter,
) -> None:
    with failure_span("lonely", parent=otel_context.Context()):
        pass
    (span,) = [s for s in exported.get_finished_spans() if s.name == "lonely"]
    assert span.parent is None
    assert list(span.links) == []


# --- the setting ----------------------------------------------------------------------------------


class RegistryLike(ServiceSettings):
    model_config = service_config("registry")


@pytest.mark.parametrize(
    ("environment", "ratio"),
    [("dev", 1.0), ("test", 1.0), ("production", PRODUCTION_TRACE_SAMPLE_RATIO)],
)
def test_the_default_ratio_keeps_every_trace_where_people_debug(
    environment: str, ratio: float
) -> None:
    settings = ServiceSettings(
        service_name="registry", environment=environment, database_url="postgresql://h/db"
    )
    assert settings.trace_ratio() == ratio


def test_each_service_sets_its_own_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_TRACE_SAMPLE_RATIO", "0.25")
    monkeypatch.setenv("CORDEES_TRACE_SAMPLE_RATIO", "0.5")
    settings = RegistryLike(service_name="registry", database_url="postgresql://h/db")
    assert settings.trace_ratio() == 0.25


@pytest.mark.parametrize("ratio", ["-0.1", "1.5", "nan", "often"])
def test_a_ratio_setting_outside_zero_to_one_is_refused(
    monkeypatch: pytest.MonkeyPatch, ratio: str
) -> None:
    monkeypatch.setenv("REGISTRY_TRACE_SAMPLE_RATIO", ratio)
    with pytest.raises(pydantic.ValidationError):
        RegistryLike(service_name="registry", database_url="postgresql://h/db")
