"""Legacy span documents → Data Prepper's *standard* (plain-raw) span documents (pure).

The input is what `tasks.otel`/`tasks.transform` emit for the legacy `otel-v1-apm-span` template
(flat keys, `span.attributes.http@method`, every attribute a string); the output is the shape
Data Prepper's `otel_traces` processor writes with `index_type: trace-analytics-plain-raw`
(`OTelProtoStandardCodec.parseSpan`, `JacksonStandardSpan`) into
`otel-v1-apm-span-index-standard-template.json`:

- `attributes` / `resource.attributes` as objects keyed by the OTel attribute names
  (`http.method`); `@` in a legacy key is the `.` it stands for;
- values typed where the semantic conventions say they are numbers (`http.status_code`, …), so
  the template's `long_attributes` dynamic template maps them as `long`; everything else stays a
  string (a keyword): annotations in particular, whose types differ between accounts and would
  otherwise conflict;
- `status` {code, message}, `resource` {attributes, droppedAttributesCount, schemaUrl},
  `instrumentationScope` {droppedAttributesCount} (X-Ray segments carry no instrumentation
  scope), `traceGroupFields` as an object;
- no `@timestamp`: the template maps one, but Data Prepper's codec never writes it (its span
  documents carry `startTime`/`endTime`, which is what its readers query), and on the sandbox
  OpenSearch it cost ~8-14 % of a span document's indexing (a fourth `date_nanos` per span).

Left as the transform writes them although Data Prepper differs: `serviceName`, `traceGroup` and
`traceGroupFields` are written on every span (Data Prepper's codec keeps them in event metadata;
its `otel_traces` processor copies `traceGroup`/`traceGroupFields` into child span documents, and
`serviceName` only into spans it flushes late: read in `OTelProtoStandardCodec.parseSpan`,
`JacksonStandardSpan`, `OTelTraceRawProcessor`); Data Prepper's `flags` and top-level scope
`schemaUrl` (0 and "" for X-Ray, which has neither) and the `derived.*` attributes its
`otel_traces` processor adds to SERVER spans are not written.

Being a conversion of the legacy documents, whatever the transform adds to them flows through:
an unknown `a.b` key of the legacy document becomes the nested object `a: {b: …}`.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["NUMERIC_ATTRIBUTES", "standard_span", "standard_spans"]

# OTel semantic-convention attributes whose values are integers (the legacy documents hold them as
# strings, because the legacy template maps every attribute as a keyword).
NUMERIC_ATTRIBUTES = frozenset(
    {
        "http.status_code",
        "http.response.status_code",
        "http.response_content_length",
        "http.request_content_length",
        "http.response.body.size",
        "http.request.body.size",
        "net.peer.port",
        "server.port",
        "aws.xray.retries",
    }
)

_SPAN_ATTRIBUTES = "span.attributes."
_RESOURCE_ATTRIBUTES = "resource.attributes."
_COPIED = (
    "traceId",
    "spanId",
    "traceState",
    "parentSpanId",
    "name",
    "kind",
    "startTime",
    "endTime",
    "durationInNanos",
    "serviceName",
    "traceGroup",
    "droppedAttributesCount",
    "droppedEventsCount",
    "droppedLinksCount",
)


def _typed(name: str, value: Any) -> Any:
    if name in NUMERIC_ATTRIBUTES and type(value) is str:
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
    return value


def _attribute_name(key: str) -> str:
    return key.replace("@", ".")


def _attributes(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {}
    out = {}
    for key, value in raw.items():
        name = _attribute_name(str(key))
        out[name] = _typed(name, value)
    return out


def _put(target: dict[str, Any], parts: tuple[str, ...], value: Any) -> None:
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


# What to do with a legacy key: (how, name or path). Keys repeat across spans (the same resource and
# span attributes in every span of a service), so each key is classified once and remembered (a
# bounded cache: annotation names are the customers' and need not be few).
_ATTRIBUTE, _NUMERIC_ATTRIBUTE, _RESOURCE, _NUMERIC_RESOURCE, _LIST, _PATH, _PLAIN = range(7)


@functools.lru_cache(maxsize=20_000)
def _plan(key: str) -> tuple[int, Any]:
    if key.startswith(_SPAN_ATTRIBUTES):
        name = _attribute_name(key[len(_SPAN_ATTRIBUTES) :])
        plan: tuple[int, Any] = (_NUMERIC_ATTRIBUTE if name in NUMERIC_ATTRIBUTES else _ATTRIBUTE, name)
    elif key.startswith(_RESOURCE_ATTRIBUTES):
        name = _attribute_name(key[len(_RESOURCE_ATTRIBUTES) :])
        plan = (_NUMERIC_RESOURCE if name in NUMERIC_ATTRIBUTES else _RESOURCE, name)
    elif key in ("events", "links"):
        plan = (_LIST, key)
    elif "." in key:  # status.code, traceGroupFields.endTime, or what the transform adds
        plan = (_PATH, tuple(key.split(".")))
    else:
        plan = (_PLAIN, key)
    return plan


def standard_span(span: dict[str, Any]) -> dict[str, Any]:
    """One legacy span document → its standard (plain-raw) document."""
    out: dict[str, Any] = {key: span[key] for key in _COPIED if key in span}
    attributes: dict[str, Any] = {}
    resource_attributes: dict[str, Any] = {}
    for key, value in span.items():
        if key in out:
            continue
        how, name = _plan(key)
        if how == _ATTRIBUTE:
            attributes[name] = value
        elif how == _RESOURCE:
            resource_attributes[name] = value
        elif how == _NUMERIC_ATTRIBUTE:
            attributes[name] = _typed(name, value)
        elif how == _NUMERIC_RESOURCE:
            resource_attributes[name] = _typed(name, value)
        elif how == _LIST:
            items = []
            for item in value or []:
                if isinstance(item, dict):
                    converted = dict(item)
                    if "attributes" in converted:
                        converted["attributes"] = _attributes(converted["attributes"])
                    items.append(converted)
            out[key] = items
        elif how == _PATH:
            _put(out, name, value)
        else:
            out[key] = value
    out["attributes"] = attributes
    resource = out.get("resource")
    if not isinstance(resource, dict):
        resource = out["resource"] = {}
    resource["attributes"] = resource_attributes
    resource.setdefault("droppedAttributesCount", 0)
    resource.setdefault("schemaUrl", "")
    scope = out.get("instrumentationScope")
    if not isinstance(scope, dict):
        scope = out["instrumentationScope"] = {}
    scope.setdefault("droppedAttributesCount", 0)
    status = out.get("status")
    if not isinstance(status, dict):
        status = out["status"] = {}
    status.setdefault("code", 0)
    status.setdefault("message", "")
    out.setdefault("events", [])
    out.setdefault("links", [])
    return out


def standard_spans(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [standard_span(span) for span in spans]
