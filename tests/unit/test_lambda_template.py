"""The SAM template agrees with the handler: what cfn-lint (`make validate`) cannot know."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from login_etl.kms import ENCRYPTION_CONTEXT

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "lambda" / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short tags (!Ref, !Sub, !GetAtt) as {tag: value}."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node)
    else:
        value = loader.construct_mapping(node)
    return {suffix: value}


_CfnLoader.add_multi_constructor("!", _tag)


def problems(doc: dict) -> list[str]:
    """What in the template contradicts the handler or the queue's needs."""
    out = []
    resources = doc["Resources"]
    functions = {
        name: r["Properties"]
        for name, r in resources.items()
        if r["Type"] == "AWS::Serverless::Function"
    }
    glob = doc["Globals"]["Function"]
    if glob.get("Runtime") != "python3.12":
        out.append("runtime is not python3.12 (the zip's wheels are for 3.12)")
    for name, fn in functions.items():
        module, _, attr = fn["Handler"].rpartition(".")
        if not callable(getattr(importlib.import_module(module), attr, None)):
            out.append(f"{name}: handler {fn['Handler']} is not a callable")
    loader = functions["LoaderFunction"]
    [mapping] = [e["Properties"] for e in loader["Events"].values() if e["Type"] == "SQS"]
    if "ReportBatchItemFailures" not in mapping.get("FunctionResponseTypes", []):
        out.append("the mapping does not read partial batch responses")
    queue = resources["LoginQueue"]["Properties"]
    if queue["VisibilityTimeout"] < 6 * loader["Timeout"]:
        out.append("the queue's visibility timeout is under six function timeouts")
    if "RedrivePolicy" not in queue:
        out.append("the queue has no DLQ")
    conditions = [
        s.get("Condition", {}).get("StringEquals", {})
        for p in loader.get("Policies", [])
        for s in p.get("Statement", [])
        if s.get("Action") == "kms:Decrypt"
    ]
    wanted = {f"kms:EncryptionContext:{k}": v for k, v in ENCRYPTION_CONTEXT.items()}
    if wanted not in conditions:
        out.append("kms:Decrypt is not bound to the masking key's encryption context")
    variables = set(glob["Environment"]["Variables"])
    if not {"LOGIN_ETL_DATABASE_URL", "LOGIN_ETL_MASKING_KEY"} <= variables:
        out.append("the database URL or the key is not set")
    return out


@pytest.fixture
def template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # a SafeLoader


def test_the_template_agrees_with_the_handler(template) -> None:
    assert problems(template) == []


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        (("Globals", "Function", "Runtime"), "python3.11", "runtime"),
        (
            ("Resources", "LoaderFunction", "Properties", "Handler"),
            "login_etl.aws_lambda.nope",
            "callable",
        ),
        (("Resources", "LoginQueue", "Properties", "VisibilityTimeout"), 60, "visibility"),
    ],
)
def test_each_check_finds_its_mistake(template, path, value, says) -> None:
    node = template
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert any(says in p for p in problems(template))


def test_missing_partial_responses_dlq_and_kms_condition_are_found(template) -> None:
    loader = template["Resources"]["LoaderFunction"]["Properties"]
    loader["Events"]["Logins"]["Properties"]["FunctionResponseTypes"] = []
    del template["Resources"]["LoginQueue"]["Properties"]["RedrivePolicy"]
    loader["Policies"][0]["Statement"][0].pop("Condition")
    found = problems(template)
    assert len(found) == 3, found
