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
- `@timestamp` = the span's start time (span time, never arrival time).

Being a conversion of the legacy documents, whatever the transform adds to them flows through:
an unknown `a.b` key of the legacy document becomes the nested object `a: {b: …}`.
"""

from __future__ import annotations

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


def _put(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def standard_span(span: dict[str, Any]) -> dict[str, Any]:
    """One legacy span document → its standard (plain-raw) document."""
    out: dict[str, Any] = {key: span[key] for key in _COPIED if key in span}
    attributes: dict[str, Any] = {}
    resource_attributes: dict[str, Any] = {}
    for key, value in span.items():
        if key in out:
            continue
        if key.startswith(_SPAN_ATTRIBUTES):
            name = _attribute_name(key[len(_SPAN_ATTRIBUTES) :])
            attributes[name] = _typed(name, value)
        elif key.startswith(_RESOURCE_ATTRIBUTES):
            name = _attribute_name(key[len(_RESOURCE_ATTRIBUTES) :])
            resource_attributes[name] = _typed(name, value)
        elif key in ("events", "links"):
            items = []
            for item in value or []:
                if isinstance(item, dict):
                    converted = dict(item)
                    if "attributes" in converted:
                        converted["attributes"] = _attributes(converted["attributes"])
                    items.append(converted)
            out[key] = items
        elif "." in key:  # status.code, traceGroupFields.endTime, or what the transform adds
            _put(out, key, value)
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
    if "startTime" in out:
        out["@timestamp"] = out["startTime"]
    return out


def standard_spans(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [standard_span(span) for span in spans]
