"""The query-protocol model of SQS, derived from botocore's JSON one, on the wire.

botocore's own query serializer and XML parser run here on the derived
model, without a network: requests must carry the names query-only servers
read (``AttributeName.1``, ``DeleteMessageBatchRequestEntry.1.Id``), and
their XML answers must come back as the dictionaries the JSON protocol gives.
"""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from botocore.model import ServiceModel
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from login_etl.sqswire import QueryLoader, UnexpectedAnswer, check_answers, query_model

URL = "http://localhost:4566/000000000000/login-queue"


def _json_model() -> dict[str, Any]:
    loader = botocore.session.get_session().get_component("data_loader")
    model: dict[str, Any] = loader.load_service_model("sqs", "service-2")
    return model


@pytest.fixture(scope="module")
def model() -> ServiceModel:
    return ServiceModel(query_model(_json_model()), "sqs")


def wire(model: ServiceModel, operation: str, **params: Any) -> dict[str, Any]:
    """The form fields botocore's query serializer sends for one call."""
    request = create_serializer("query").serialize_to_request(
        params, model.operation_model(operation)
    )
    body: dict[str, Any] = request["body"]
    return body


def parse(model: ServiceModel, operation: str, xml: str, status: int = 200) -> dict[str, Any]:
    """What botocore's query parser makes of an XML answer to one call."""
    op = model.operation_model(operation)
    response = {"status_code": status, "headers": {}, "body": xml.encode()}
    parsed: dict[str, Any] = create_parser("query").parse(response, op.output_shape)
    parsed.pop("ResponseMetadata", None)
    return parsed


def test_the_shipped_model_is_left_as_it_is() -> None:
    shipped = _json_model()
    derived = query_model(shipped)
    assert shipped["metadata"]["protocol"] == "json"
    assert "locationName" not in shipped["shapes"]["MessageList"]["member"]
    assert derived["metadata"]["protocol"] == "query"
    assert derived["metadata"]["protocols"] == ["query"]
    assert "targetPrefix" not in derived["metadata"]


def test_the_loader_answers_the_query_model_for_sqs_only() -> None:
    loader = QueryLoader()
    assert loader.load_service_model("sqs", "service-2")["metadata"]["protocol"] == "query"
    assert loader.load_service_model("kms", "service-2")["metadata"]["protocol"] == "json"


def test_receive_asks_for_the_system_attributes_by_their_old_name(model: ServiceModel) -> None:
    assert wire(
        model,
        "ReceiveMessage",
        QueueUrl=URL,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=20,
        MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
    ) == {
        "Action": "ReceiveMessage",
        "Version": "2012-11-05",
        "QueueUrl": URL,
        "MaxNumberOfMessages": 10,
        "WaitTimeSeconds": 20,
        "AttributeName.1": "SentTimestamp",
        "AttributeName.2": "ApproximateReceiveCount",
    }


def test_batch_entries_and_attribute_maps_are_numbered_by_their_element_names(
    model: ServiceModel,
) -> None:
    entries = [{"Id": "0", "ReceiptHandle": "r0"}, {"Id": "1", "ReceiptHandle": "r1"}]
    assert wire(model, "DeleteMessageBatch", QueueUrl=URL, Entries=entries) == {
        "Action": "DeleteMessageBatch",
        "Version": "2012-11-05",
        "QueueUrl": URL,
        "DeleteMessageBatchRequestEntry.1.Id": "0",
        "DeleteMessageBatchRequestEntry.1.ReceiptHandle": "r0",
        "DeleteMessageBatchRequestEntry.2.Id": "1",
        "DeleteMessageBatchRequestEntry.2.ReceiptHandle": "r1",
    }
    extend = [{"Id": "0", "ReceiptHandle": "r0", "VisibilityTimeout": 60}]
    fields = wire(model, "ChangeMessageVisibilityBatch", QueueUrl=URL, Entries=extend)
    assert fields["ChangeMessageVisibilityBatchRequestEntry.1.VisibilityTimeout"] == 60
    sent = wire(model, "SendMessageBatch", QueueUrl=URL, Entries=[{"Id": "0", "MessageBody": "b"}])
    assert sent["SendMessageBatchRequestEntry.1.MessageBody"] == "b"
    assert (
        wire(model, "GetQueueAttributes", QueueUrl=URL, AttributeNames=["All"])["AttributeName.1"]
        == "All"
    )
    created = wire(
        model,
        "CreateQueue",
        QueueName="q",
        Attributes={"VisibilityTimeout": "30"},
        tags={"team": "data"},
    )
    assert {k: v for k, v in created.items() if k.startswith(("Attribute.", "Tag."))} == {
        "Attribute.1.Name": "VisibilityTimeout",
        "Attribute.1.Value": "30",
        "Tag.1.Key": "team",
        "Tag.1.Value": "data",
    }


RECEIVE_XML = """<?xml version="1.0"?>
<ReceiveMessageResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/">
  <ReceiveMessageResult>
    <Message>
      <MessageId>m-1</MessageId>
      <ReceiptHandle>r-1</ReceiptHandle>
      <MD5OfBody>x</MD5OfBody>
      <Body>{"user_id": "u"}</Body>
      <Attribute><Name>SentTimestamp</Name><Value>1700000000000</Value></Attribute>
      <Attribute><Name>ApproximateReceiveCount</Name><Value>2</Value></Attribute>
    </Message>
    <Message>
      <MessageId>m-2</MessageId>
      <ReceiptHandle>r-2</ReceiptHandle>
      <Body>b</Body>
    </Message>
  </ReceiveMessageResult>
  <ResponseMetadata><RequestId>req</RequestId></ResponseMetadata>
</ReceiveMessageResponse>"""


def test_received_messages_come_back_as_the_json_protocol_gives_them(model: ServiceModel) -> None:
    assert parse(model, "ReceiveMessage", RECEIVE_XML) == {
        "Messages": [
            {
                "MessageId": "m-1",
                "ReceiptHandle": "r-1",
                "MD5OfBody": "x",
                "Body": '{"user_id": "u"}',
                "Attributes": {"SentTimestamp": "1700000000000", "ApproximateReceiveCount": "2"},
            },
            {"MessageId": "m-2", "ReceiptHandle": "r-2", "Body": "b"},
        ]
    }


def test_batch_results_queue_attributes_and_urls_are_read(model: ServiceModel) -> None:
    deleted = parse(
        model,
        "DeleteMessageBatch",
        "<DeleteMessageBatchResponse><DeleteMessageBatchResult>"
        "<DeleteMessageBatchResultEntry><Id>0</Id></DeleteMessageBatchResultEntry>"
        "<BatchResultErrorEntry><Id>1</Id><Code>ReceiptHandleIsInvalid</Code>"
        "<SenderFault>true</SenderFault></BatchResultErrorEntry>"
        "</DeleteMessageBatchResult></DeleteMessageBatchResponse>",
    )
    assert deleted == {
        "Successful": [{"Id": "0"}],
        "Failed": [{"Id": "1", "Code": "ReceiptHandleIsInvalid", "SenderFault": True}],
    }
    attributes = parse(
        model,
        "GetQueueAttributes",
        "<GetQueueAttributesResponse><GetQueueAttributesResult>"
        "<Attribute><Name>ApproximateNumberOfMessages</Name><Value>3</Value></Attribute>"
        "<Attribute><Name>RedrivePolicy</Name><Value>{}</Value></Attribute>"
        "</GetQueueAttributesResult></GetQueueAttributesResponse>",
    )
    assert attributes == {"Attributes": {"ApproximateNumberOfMessages": "3", "RedrivePolicy": "{}"}}
    url = parse(
        model,
        "GetQueueUrl",
        f"<GetQueueUrlResponse><GetQueueUrlResult><QueueUrl>{URL}</QueueUrl>"
        "</GetQueueUrlResult></GetQueueUrlResponse>",
    )
    assert url == {"QueueUrl": URL}


def test_an_error_answer_keeps_the_code_the_service_code_checks(model: ServiceModel) -> None:
    error = parse(
        model,
        "GetQueueAttributes",
        "<ErrorResponse><Error><Type>Sender</Type>"
        "<Code>AWS.SimpleQueueService.NonExistentQueue</Code>"
        "<Message>The specified queue does not exist for this wsdl version.</Message>"
        "</Error><RequestId>r</RequestId></ErrorResponse>",
        status=400,
    )
    assert error["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"


# -- answers in the other protocol --------------------------------------------------

XML_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error>'
    b"<Code>AWS.SimpleQueueService.NonExistentQueue</Code>"
    b"<Message>The specified queue does not exist for this wsdl version.</Message>"
    b"</Error></ErrorResponse>"
)


def answer(protocol: str, status: int, body: bytes) -> UnexpectedAnswer | None:
    """What the before-parse check makes of one answer: None when it passes."""
    try:
        check_answers(protocol)(
            response_dict={"status_code": status, "headers": {"content-type": "x"}, "body": body}
        )
    except UnexpectedAnswer as exc:
        return exc
    return None


@pytest.mark.parametrize(
    ("protocol", "status", "body", "xml"),
    [
        ("json", 400, XML_ERROR, True),
        ("json", 200, b"<CreateQueueResponse/>", True),
        ("json", 404, b"The requested resource could not be found.", False),
        ("json", 502, b"<html><body>Bad Gateway</body></html>", False),
        ("query", 200, b'{"QueueUrl": "u"}', False),
        ("query", 404, b"<!DOCTYPE html><html>Not Found</html>", False),
    ],
)
def test_an_answer_in_another_protocol_is_caught_before_parsing(
    protocol: str, status: int, body: bytes, xml: bool
) -> None:
    caught = answer(protocol, status, body)
    assert caught is not None
    assert (caught.protocol, caught.status, caught.xml) == (protocol, status, xml)


@pytest.mark.parametrize(
    ("protocol", "status", "body"),
    [
        ("json", 200, b'{"Messages": []}'),
        ("json", 400, b'  {"__type": "com.amazonaws.sqs#QueueDoesNotExist"}'),
        ("json", 200, b""),
        ("query", 200, b"<ReceiveMessageResponse/>"),
        ("query", 400, XML_ERROR),
    ],
)
def test_an_answer_in_the_protocol_asked_passes(protocol: str, status: int, body: bytes) -> None:
    assert answer(protocol, status, body) is None


def test_the_description_quotes_an_error_body_as_text_but_never_a_2xx_body() -> None:
    error = answer("json", 400, XML_ERROR)
    assert error is not None
    assert error.describe() == (
        "HTTP 400 (x): AWS.SimpleQueueService.NonExistentQueue "
        "The specified queue does not exist for this wsdl version."
    )
    ok = answer(
        "json", 200, b"<ReceiveMessageResponse><Body>secret</Body></ReceiveMessageResponse>"
    )
    assert ok is not None
    assert ok.describe() == "HTTP 200 (x, 68 bytes)"
    long = answer("json", 404, b"x" * 500)
    assert long is not None and long.describe().endswith("x...") and len(long.describe()) < 200


def test_clients_of_a_process_share_a_session_per_protocol_and_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second client reuses the session's loaded models; another AWS_* environment
    (other credentials, profile or endpoint) gets a session of its own."""
    from login_etl import sqs

    for name, value in {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sqs, "_SESSIONS", {})

    def client(protocol: str) -> Any:
        return sqs.client_factory(URL, region_name="us-east-1", endpoint_url=URL)(protocol)

    first, second = client("json"), client("json")
    assert first is not second and len(sqs._SESSIONS) == 1
    assert first.meta.service_model.protocol == second.meta.service_model.protocol == "json"
    assert client("query").meta.service_model.protocol == "query"
    assert len(sqs._SESSIONS) == 2
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "c")
    assert client("json").meta.service_model.protocol == "json"
    assert len(sqs._SESSIONS) == 3


class _Body:
    """The raw body of a canned answer (what botocore reads a response from)."""

    def stream(self, **_: Any) -> Any:
        yield b"{}"


def _sent_as(client: Any) -> tuple[str, str, str]:
    """(host, access key id, session token) a call of `client` goes out with; nothing is sent."""
    from botocore.awsrequest import AWSResponse

    sent: list[Any] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        sent.append(request)
        return AWSResponse(request.url, 200, {}, _Body())

    client.meta.events.register("before-send", answer)
    client.list_queues()
    (request,) = sent
    auth = request.headers["Authorization"].decode()
    key_id = auth.split("Credential=", 1)[1].split("/", 1)[0]
    token = request.headers.get("X-Amz-Security-Token", b"").decode()
    return request.url.split("/")[2], key_id, token


@pytest.mark.parametrize(
    "change",
    [
        {"AWS_ACCESS_KEY_ID": "AKIDNEW", "AWS_SECRET_ACCESS_KEY": "new-secret"},
        {"AWS_SESSION_TOKEN": "token-2"},
        {"AWS_PROFILE": "second"},
        {"AWS_ENDPOINT_URL": "http://127.0.0.2:4567"},
    ],
    ids=["keys", "session-token", "profile", "endpoint"],
)
def test_a_client_made_after_the_aws_environment_changed_calls_with_the_new_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, change: dict[str, str]
) -> None:
    """A session made under one AWS_* environment never serves another: its
    credentials are resolved once, so a reused one would sign as before."""
    from login_etl import sqs

    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[first]\naws_access_key_id = AKIDFIRST\naws_secret_access_key = s1\n"
        "[second]\naws_access_key_id = AKIDSECOND\naws_secret_access_key = s2\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    before = {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566"}
    if "AWS_PROFILE" in change:
        before["AWS_PROFILE"] = "first"
    else:
        before.update(AWS_ACCESS_KEY_ID="AKIDOLD", AWS_SECRET_ACCESS_KEY="old-secret")
        before["AWS_SESSION_TOKEN"] = "token-1"
    for name, value in before.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sqs, "_SESSIONS", {})

    def call() -> tuple[str, str, str]:
        return _sent_as(sqs.client_factory(URL, region_name="us-east-1")("json"))

    first = call()
    for name, value in change.items():
        monkeypatch.setenv(name, value)
    after = {**before, **change}
    expected_key = {"first": "AKIDFIRST", "second": "AKIDSECOND"}.get(
        after.get("AWS_PROFILE", ""), after.get("AWS_ACCESS_KEY_ID", "")
    )
    expected = (
        after["AWS_ENDPOINT_URL"].split("/")[2],
        expected_key,
        after.get("AWS_SESSION_TOKEN", ""),
    )
    assert call() == expected != first
