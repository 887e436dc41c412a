"""SQS's two wire protocols, and finding the one an endpoint speaks.

botocore since 1.31.81 speaks only the JSON protocol to SQS, which real SQS,
LocalStack 3 and later and ElasticMQ 1.4 and later answer. Endpoints from
before that switch answer only the query protocol (form-encoded requests, XML
answers): LocalStack before 3.0, as in the brief's compose image, and
ElasticMQ before 1.4. botocore still speaks query to SQS when its service
model says so: `query_model` derives that model from the JSON one botocore
ships (the traits it adds are what botocore's own query model of SQS held),
and `SqsClient` picks the protocol on first contact:

* ``auto``: the first call goes out in JSON. An answer in JSON settles it. An
  answer in XML, or one in neither JSON nor XML with a status below 500, is
  what a query-only server gives a JSON request: the call is made again in
  query (nothing happened on the server, which could not read it), and an
  XML answer settles it. If that answer is not XML either, the endpoint
  speaks neither (a `ConfigError` naming the URL and both answers).
* ``json`` / ``query``: that protocol only; an answer in the other one is a
  `ConfigError` that says which setting would work.

A non-JSON, non-XML answer with a 5xx status (a proxy's error page) settles
nothing and is an outage (`SourceUnavailable`), retried like any other.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
from collections.abc import Callable
from typing import Any

import botocore.loaders

from login_etl.errors import ConfigError, SourceUnavailable

log = logging.getLogger(__name__)

PROTOCOLS = ("auto", "json", "query")
_XML_NAMESPACE = "http://queue.amazonaws.com/doc/2012-11-05/"

# The element name of one item of each list, where it is not the list's
# shape name without "List". ReceiveMessage's MessageSystemAttributeNames goes
# out as the older AttributeName.N, which every query-only server reads (they
# predate MessageSystemAttributeName.N) and SQS still accepts.
_LIST_ITEMS = {
    "BinaryList": "BinaryListValue",
    "StringList": "StringListValue",
    "MessageSystemAttributeList": "AttributeName",
}


def query_model(json_model: dict[str, Any]) -> dict[str, Any]:
    """The query-protocol service model of SQS, from botocore's JSON-protocol one.

    Query names each list item and map entry in the request and the XML:
    ``AttributeName.1=All``, ``DeleteMessageBatchRequestEntry.1.Id=…``,
    ``Attribute.1.Name=…&Attribute.1.Value=…``, and wraps each answer in an
    ``<OperationResult>`` element. The JSON model lacks those names; this adds
    them (lists are already marked flattened) and leaves `json_model` as it is.
    """
    model = copy.deepcopy(json_model)
    meta = model["metadata"]
    for key in ("jsonVersion", "targetPrefix", "awsQueryCompatible"):
        meta.pop(key, None)
    meta.update(protocol="query", protocols=["query"], xmlNamespace=_XML_NAMESPACE)
    for operation in model["operations"].values():
        if "output" in operation:
            operation["output"]["resultWrapper"] = operation["name"] + "Result"
    shapes = model["shapes"]
    for name, shape in shapes.items():
        if shape["type"] == "list":
            shape["member"]["locationName"] = _LIST_ITEMS.get(name, name.removesuffix("List"))
        elif shape["type"] == "map":
            shape["key"]["locationName"] = "Key" if name == "TagMap" else "Name"
            shape["value"]["locationName"] = "Value"
        elif shape["type"] == "structure":
            for member, ref in shape["members"].items():
                if shapes[ref["shape"]]["type"] == "map":
                    # Attributes -> Attribute.N, tags -> Tag.N, MessageAttributes -> ...
                    ref["locationName"] = member[0].upper() + member[1:].removesuffix("s")
    return model


class QueryLoader(botocore.loaders.Loader):  # type: ignore[misc]
    """botocore's data loader, answering SQS's service model in the query protocol."""

    def load_service_model(
        self, service_name: str, type_name: str, api_version: str | None = None
    ) -> Any:
        """The shipped model; SQS's service model made query (see `query_model`)."""
        model = super().load_service_model(service_name, type_name, api_version)
        if service_name == "sqs" and type_name == "service-2":
            return query_model(model)
        return model


class UnexpectedAnswer(Exception):
    """An answer not in the protocol the request was sent in (raised before parsing)."""

    def __init__(self, protocol: str, status: int, body: bytes, content_type: str) -> None:
        super().__init__(protocol, status)
        self.protocol = protocol
        self.status = status
        self.body = body
        self.content_type = content_type

    @property
    def xml(self) -> bool:
        """True when the body is XML (an HTML page is not)."""
        start = self.body.lstrip()[:16].lower()
        return start.startswith(b"<") and not start.startswith((b"<html", b"<!doctype"))

    def describe(self) -> str:
        """Status and a short text of the body (not of a 2xx body: it could hold messages)."""
        what = self.content_type or "no content type"
        if self.status < 300:
            return f"HTTP {self.status} ({what}, {len(self.body)} bytes)"
        text = self.body[:2000].decode("utf-8", "replace")
        text = " ".join(re.sub(r"<[^>]*>", " ", text).split())
        if len(text) > 160:
            text = text[:157] + "..."
        return f"HTTP {self.status} ({what}): {text}" if text else f"HTTP {self.status} ({what})"


def check_answers(protocol: str) -> Callable[..., None]:
    """A ``before-parse`` handler that raises `UnexpectedAnswer` for a body not in `protocol`."""
    first = b"{" if protocol == "json" else b"<"

    def check(response_dict: dict[str, Any], **_: Any) -> None:
        body = response_dict.get("body") or b""
        start = body.lstrip()[:16].lower()
        if start and (not start.startswith(first) or start.startswith((b"<html", b"<!doctype"))):
            headers = response_dict.get("headers") or {}
            raise UnexpectedAnswer(
                protocol,
                int(response_dict.get("status_code", 0)),
                body,
                str(headers.get("content-type", "")),
            )

    return check


class SqsClient:
    """A boto3 SQS client that speaks the protocol its endpoint answers.

    Calls look like boto3's (``client.receive_message(QueueUrl=…)``) and
    answer the same dictionaries in either protocol. `make` builds the boto3
    client of one protocol; the query one is built on first need. Clients made
    with `sibling` share what was found, so an endpoint is probed once.
    """

    def __init__(
        self, make: Callable[[str], Any], protocol: str = "auto", *, found: _Found | None = None
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"SQS protocol must be one of {', '.join(PROTOCOLS)}: {protocol!r}")
        self._make = make
        self.forced = protocol != "auto"
        self._found = found or _Found(None if protocol == "auto" else protocol)
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        # Built now, so that configuration errors show at once.
        self.endpoint: str = self._client(self._found.protocol or "json").meta.endpoint_url

    def __repr__(self) -> str:
        return f"SqsClient({self.endpoint!r}, {self.protocol or 'auto'})"

    @property
    def protocol(self) -> str | None:
        """The protocol in use, or None before the first answer settled it."""
        return self._found.protocol

    def sibling(self, make: Callable[[str], Any]) -> SqsClient:
        """Another client (its own `make`: timeouts, pool) for the same endpoint and protocol."""
        protocol = self.protocol if self.forced and self.protocol else "auto"
        return SqsClient(make, protocol, found=self._found)

    @property
    def meta(self) -> Any:
        """The boto3 client's `meta` (region, endpoint URL) for the protocol in use."""
        return self._client(self.protocol or "json").meta

    @property
    def exceptions(self) -> Any:
        """The boto3 client's modelled exception classes, for the protocol in use."""
        return self._client(self.protocol or "json").exceptions

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, args, kwargs)

        call.__name__ = name
        return call

    def _client(self, protocol: str) -> Any:
        client = self._clients.get(protocol)
        if client is None:
            with self._lock:
                client = self._clients.get(protocol)
                if client is None:
                    client = self._make(protocol)
                    client.meta.events.register("before-parse.sqs", check_answers(protocol))
                    self._clients[protocol] = client
        return client

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        protocol = self._found.protocol
        if protocol is None:
            return self._first_contact(name, args, kwargs)
        try:
            return getattr(self._client(protocol), name)(*args, **kwargs)
        except UnexpectedAnswer as answer:
            raise self._wrong_protocol(answer) from None

    def _first_contact(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            result = getattr(self._client("json"), name)(*args, **kwargs)
        except UnexpectedAnswer as answer:
            if answer.status >= 500 and not answer.xml:
                raise self._outage(answer) from None
            return self._try_query(name, args, kwargs, answer)
        except Exception as exc:
            if _answered(exc):  # an error in JSON: the endpoint speaks JSON
                self._settle("json")
            raise
        self._settle("json")
        return result

    def _try_query(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        json_answer: UnexpectedAnswer,
    ) -> Any:
        try:
            result = getattr(self._client("query"), name)(*args, **kwargs)
        except UnexpectedAnswer as answer:
            if answer.status >= 500:
                raise self._outage(answer) from None
            raise ConfigError(
                f"SQS endpoint {self.endpoint} speaks neither SQS protocol: to JSON it "
                f"answered {json_answer.describe()}; to query, {answer.describe()} "
                "(check AWS_ENDPOINT_URL and the queue URL)"
            ) from None
        except Exception as exc:
            if _answered(exc):  # an error in XML: the endpoint speaks query
                self._settle("query")
            raise
        self._settle("query")
        return result

    def _settle(self, protocol: str) -> None:
        if self._found.protocol is None:
            self._found.protocol = protocol
            if protocol == "query":
                log.info(
                    "SQS endpoint speaks only the query protocol (XML): using it",
                    extra={"fields": {"endpoint": self.endpoint}},
                )

    def _outage(self, answer: UnexpectedAnswer) -> SourceUnavailable:
        return SourceUnavailable(f"SQS endpoint {self.endpoint} answered {answer.describe()}")

    def _wrong_protocol(self, answer: UnexpectedAnswer) -> Exception:
        if answer.status >= 500 and not answer.xml:
            return self._outage(answer)
        said = f"SQS endpoint {self.endpoint} answered {answer.describe()}"
        other = "query" if answer.protocol == "json" else "json"
        in_other = answer.xml if other == "query" else answer.body.lstrip().startswith(b"{")
        if not in_other:  # an HTML page or plain text: not SQS at all
            return ConfigError(f"{said} (not SQS: check AWS_ENDPOINT_URL and the queue URL)")
        hint = "auto or " + other if self.forced else other
        return ConfigError(
            f"{said} to the {answer.protocol} protocol: "
            f"set LOGIN_ETL_SQS_PROTOCOL / --sqs-protocol to {hint}"
        )


class _Found:
    """The protocol an endpoint was found to speak; None until its first answer."""

    def __init__(self, protocol: str | None) -> None:
        self.protocol = protocol


def _answered(exc: Exception) -> bool:
    """True when `exc` is an error answer the protocol's parser read (it has a code)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return bool(code) and not code.isdigit()
