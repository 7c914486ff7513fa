"""OTLP metric names as the OpenTelemetry Collector's Prometheus exporter writes them.

The exporter (deploy/otel-collector.yaml, default ``UnderscoreEscapingWithSuffixes``) follows
the OpenTelemetry "Prometheus and OpenMetrics Compatibility" specification, implemented in
prometheus/otlptranslator:

- every character outside ``[a-zA-Z0-9_:]`` becomes ``_``, runs of ``_`` collapse to one;
- the unit is appended as a word unless the name already has it: ``s`` → ``seconds``,
  ``ms`` → ``milliseconds``, ``By`` → ``bytes``…; a ``X/Y`` unit becomes ``X_per_Y``; an
  annotation in braces (``{event}``) is no unit and is dropped;
- a monotonic sum (a counter) gets ``_total``; a gauge of unit ``1`` gets ``_ratio``;
- a histogram is three series: ``_bucket`` (with ``le``), ``_sum`` and ``_count``;
- attribute keys become labels by the same escaping (``http.route`` → ``http_route``), and with
  ``resource_to_telemetry_conversion`` the resource's attributes too (``service.name`` →
  ``service_name``), besides ``job`` and ``instance``.
"""

from __future__ import annotations

import re

UNITS = {
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "min": "minutes",
    "h": "hours",
    "d": "days",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "%": "percent",
    "Hz": "hertz",
}
PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


def escape(name: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^a-zA-Z0-9_:]", "_", name)).strip("_")


def unit_words(unit: str) -> tuple[str, str]:
    """(main unit word, per-unit word) of a UCUM unit, each possibly empty."""
    unit = re.sub(r"\{[^}]*\}", "", unit).strip()
    if not unit or unit == "1":
        return "", ""
    main, _, per = unit.partition("/")
    return escape(UNITS.get(main, main)) if main else "", escape(PER_UNITS.get(per, per))


def prometheus_name(name: str, unit: str, kind: str, monotonic: bool) -> str:
    """The base name (without ``_bucket``/``_sum``/``_count`` for histograms).

    As otlptranslator's normalisation: the name's ``_``-separated words, then the unit's word
    unless already among them (``per_<unit>`` likewise), then ``total`` moved to the end for a
    counter, ``ratio`` appended for a gauge of unit ``1``.
    """
    words = [word for word in escape(name).split("_") if word]
    main, per = unit_words(unit)
    if main and main not in words:
        words.append(main)
    if per and per not in words:
        words += ["per", per]
    if kind == "sum" and monotonic:
        words = [word for word in words if word != "total"] + ["total"]
    if kind == "gauge" and unit == "1" and "ratio" not in words:
        words.append("ratio")
    return "_".join(words)


def series_names(name: str, unit: str, kind: str, monotonic: bool) -> set[str]:
    """Every series name PromQL can select for one OTLP metric."""
    base = prometheus_name(name, unit, kind, monotonic)
    if kind in ("histogram", "exponential_histogram"):
        return {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return {base}
