"""Group assignments in the logs: one short line per assignment, whatever the partition count."""

from __future__ import annotations

import json
import logging
import re

import pytest
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from maillage.common.logging import _compact_partitions, configure_logging, get_logger

topics = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z0-9-]{1,20}){0,2}", fullmatch=True)
assignments = st.dictionaries(topics, st.sets(st.integers(0, 63), min_size=1), max_size=12)


def expand(text: str) -> dict[str, set[int]]:
    """Read ``topic[0-2,5], other[1]`` back into partitions."""
    found: dict[str, set[int]] = {}
    for topic, spans in re.findall(r"([a-z0-9.-]+)\[([0-9,-]+)\]", text):
        for span in spans.split(","):
            first, _, last = span.partition("-")
            found.setdefault(topic, set()).update(range(int(first), int(last or first) + 1))
    return found


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", logging.INFO, __file__, 1, message, args, None)


@settings(max_examples=60, deadline=None)
@given(assignments)
def test_an_assignment_is_written_per_topic_and_loses_no_partition(
    assignment: dict[str, set[int]],
) -> None:
    partitions = {TopicPartition(t, p) for t, numbers in assignment.items() for p in numbers}
    # aiokafka passes the set as an argument; FastStream formats it into its message first.
    aiokafka_style = record("Setting newly assigned partitions %s for group %s", partitions, "g")
    faststream_style = record(
        f"Consumer m-1 assigned to partitions: ({', '.join(str(tp) for tp in partitions)})"
    )
    for line in (aiokafka_style, faststream_style):
        assert _compact_partitions(line) is True  # never drops a line
        message = line.getMessage()
        assert "TopicPartition" not in message
        assert expand(message) == assignment
        # Each topic once, each run of partitions once: bounded by the topics, not the partitions.
        assert len(message) <= 60 + sum(len(t) + 4 * len(p) + 2 for t, p in assignment.items())


def test_other_lines_pass_unchanged() -> None:
    line = record("Joined group %r (generation %s) with member_id %s", "cordees.partners", 1, "m")
    assert _compact_partitions(line) is True
    assert line.args == ("cordees.partners", 1, "m")


def test_every_process_writes_assignments_per_topic(capsys: pytest.CaptureFixture[str]) -> None:
    """Through the real chain: aiokafka's standard-library logger and FastStream's structlog one."""
    configure_logging("tests", fmt="json")
    partitions = {TopicPartition("registry.partners", p) for p in range(6)}
    logging.getLogger("aiokafka.consumer.group_coordinator").info(
        "Setting newly assigned partitions %s for group %s", partitions, "g"
    )
    get_logger("maillage.tests.broker").info(
        f"Consumer m-1 assigned to partitions: ({', '.join(str(tp) for tp in partitions)})",
        extra={"topic": "registry.partners"},
    )
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == [
        "Setting newly assigned partitions registry.partners[0-5] for group g",
        "Consumer m-1 assigned to partitions: registry.partners[0-5]",
    ]
