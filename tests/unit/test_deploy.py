"""The deployment artifacts agree with the service and with each other.

Reads docker-compose.yml, the Dockerfile and deploy/** as files; no tool or
service runs here (`make validate` runs the external validators). Every
checker returns a list of problems, and each is also shown to find a planted
mistake, so none passes by checking nothing.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OPERATIONS = ROOT / "docs" / "operations.md"

# The metrics a worker exports: name -> (type, {label: allowed values or None}).
# This is the contract alerts, dashboard and docs are written against.
METRICS: dict[str, tuple[str, dict[str, frozenset[str] | None]]] = {
    "login_etl_messages_total": (
        "counter",
        {"outcome": frozenset({"loaded", "rejected", "duplicate"})},
    ),
    "login_etl_rejections_total": ("counter", {"reason": None}),
    "login_etl_retries_total": (
        "counter",
        {"stage": frozenset({"receive", "write", "delete", "extend", "prune", "lake", "startup"})},
    ),
    "login_etl_received_total": ("counter", {}),
    "login_etl_redeliveries_total": ("counter", {}),
    "login_etl_deleted_total": ("counter", {}),
    "login_etl_delete_failures_total": ("counter", {}),
    "login_etl_released_total": ("counter", {}),
    "login_etl_extended_total": ("counter", {}),
    "login_etl_batches_total": ("counter", {}),
    "login_etl_batch_duration_seconds": ("histogram", {}),
    "login_etl_lag_seconds": ("histogram", {}),
    "login_etl_queue_messages": (
        "gauge",
        {
            "queue": frozenset({"main", "dlq"}),
            "state": frozenset({"visible", "in_flight", "delayed"}),
        },
    ),
    "login_etl_in_hand": ("gauge", {}),
    "login_etl_last_commit_timestamp_seconds": ("gauge", {}),
    "login_etl_lake_outbox_rows": ("gauge", {}),
    "login_etl_lake_values_dropped_total": (
        "counter",
        {
            "reason": frozenset(
                {"address", "own_ip", "own_device_id", "not_unicode", "number", "too_large"}
            )
        },
    ),
    "login_etl_build_info": ("gauge", {"version": None}),
}
# prometheus-client's default process collector, and Prometheus's own `up`.
OTHER_SERIES = {
    "up",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
}
# Labels Prometheus attaches at scrape time.
TARGET_LABELS = {"job", "instance"}
# Names the docs may use beside the metrics: tables and the Airflow DAG.
NOT_METRICS = {
    "login_etl_ledger",
    "login_etl_pii_access",
    "login_etl_lake_outbox",
    "login_etl_drain",
    "login_etl_schema_version",
}

_SERIES = re.compile(r"\b((?:login_etl|process)_[a-z_]+|up)\b\s*(\{[^{}]*\})?")
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def promql_problems(expr: str) -> list[str]:
    """Unknown metric names, labels or label values in one PromQL expression."""
    problems = []
    all_labels = TARGET_LABELS | {"le"} | {k for _, ls in METRICS.values() for k in ls}
    for name, matchers in _SERIES.findall(expr):
        if name in OTHER_SERIES:
            continue
        base, suffix = name, ""
        for s in ("_bucket", "_sum", "_count"):
            if name.endswith(s) and METRICS.get(name[: -len(s)], ("",))[0] == "histogram":
                base, suffix = name[: -len(s)], s
        if base not in METRICS:
            problems.append(f"unknown metric {name}")
            continue
        labels = METRICS[base][1]
        for label, op, value in _MATCHER.findall(matchers):
            if label == "le" and suffix == "_bucket" or label in TARGET_LABELS:
                continue
            if label not in labels:
                problems.append(f"{name} has no label {label}")
                continue
            allowed = labels[label]
            if allowed is None or value.startswith("$"):
                continue
            values = value.split("|") if op in ("=~", "!~") else [value]
            problems += [f"{name}{{{label}}} is never {v!r}" for v in values if v not in allowed]
    for group in _GROUPING.findall(expr):
        for label in filter(None, (g.strip() for g in group.split(","))):
            if label not in all_labels:
                problems.append(f"grouping by unknown label {label}")
    return problems


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def _exprs(node: Any) -> list[str]:
    """Every `expr` string in a Grafana dashboard, nested panels included."""
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for v in node.values() for e in _exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in _exprs(v)]
    return []


def _dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "login-etl.json").read_text())


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


# --- PromQL against the metric contract ------------------------------------


def test_the_promql_checker_finds_mistakes() -> None:
    assert promql_problems('sum(rate(login_etl_messages_total{outcome="loaded"}[5m]))') == []
    assert promql_problems("rate(login_etl_loaded[5m])") == ["unknown metric login_etl_loaded"]
    assert promql_problems('login_etl_messages_total{outcome="ok"}') == [
        "login_etl_messages_total{outcome} is never 'ok'"
    ]
    assert promql_problems('login_etl_retries_total{stage=~"write|sql"}') == [
        "login_etl_retries_total{stage} is never 'sql'"
    ]
    assert promql_problems('login_etl_in_hand{reason="x"}') == [
        "login_etl_in_hand has no label reason"
    ]
    assert promql_problems("login_etl_in_hand_count") == ["unknown metric login_etl_in_hand_count"]
    assert promql_problems("sum by (pod_ip) (login_etl_in_hand)") == [
        "grouping by unknown label pod_ip"
    ]


@pytest.mark.parametrize("rule", _alert_rules(), ids=lambda r: r["alert"])
def test_alert_uses_only_exported_metrics(rule: dict[str, Any]) -> None:
    assert promql_problems(rule["expr"]) == []


def test_dashboard_uses_only_exported_metrics() -> None:
    exprs = _exprs(_dashboard())
    assert len(exprs) >= 8
    problems = [f"{e}: {p}" for e in exprs for p in promql_problems(e)]
    assert problems == []


def test_alerts_cover_what_must_page() -> None:
    exprs = " ".join(rule["expr"] for rule in _alert_rules())
    for needle in (
        'queue="dlq"',
        "login_etl_lag_seconds",
        "login_etl_last_commit_timestamp_seconds",
        'outcome="rejected"',
        "login_etl_retries_total",
        "login_etl_lake_outbox_rows",
    ):
        assert needle in exprs


def test_every_alert_has_a_firing_unit_test_and_a_runbook() -> None:
    tests = yaml.safe_load((ROOT / "tests" / "prometheus" / "alerts_test.yml").read_text())
    fired = {
        case["alertname"]
        for group in tests["tests"]
        for case in group["alert_rule_test"]
        if case.get("exp_alerts")
    }
    anchors = {
        _slug(line.lstrip("#"))
        for line in OPERATIONS.read_text("utf-8").splitlines()
        if line.startswith("#")
    }
    for rule in _alert_rules():
        assert rule["alert"] in fired, f"{rule['alert']} never fires in alerts_test.yml"
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "docs/operations.md"
        assert anchor in anchors, f"{rule['alert']}: no heading #{anchor} in {page}"
        assert rule["labels"]["severity"] in ("warning", "critical")


# --- Grafana ----------------------------------------------------------------


def test_dashboard_has_the_panels_on_call_opens_first() -> None:
    dashboard = _dashboard()
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    by_title = {p["title"]: " ".join(_exprs(p)) for p in panels}
    wanted = {
        "Throughput by outcome": "login_etl_messages_total",
        "Lag p50 / p99": "histogram_quantile(0.99, sum by (le) (rate(login_etl_lag_seconds_bucket",
        "Queue depth (main and DLQ)": "login_etl_queue_messages",
        "DLQ visible": 'queue="dlq"',
        "Rejections by reason": "sum by (reason) (rate(login_etl_rejections_total",
        "Retries by stage": "sum by (stage) (rate(login_etl_retries_total",
        "Last commit age": "time() - max(login_etl_last_commit_timestamp_seconds",
        "In hand": "login_etl_in_hand",
        "Batch duration p50 / p99": "login_etl_batch_duration_seconds_bucket",
    }
    for title, needle in wanted.items():
        assert needle in by_title.get(title, ""), title
    # Portable: the data source is a variable, not one installation's uid.
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"


# --- Documentation ----------------------------------------------------------


def _production_section() -> str:
    readme = (ROOT / "README.md").read_text("utf-8")
    match = re.search(r"^## Production\n(.*?)(?=^## )", readme, re.S | re.M)
    assert match, "README has no '## Production' section"
    return match.group(1)


@pytest.mark.parametrize("text", ["operations", "readme"])
def test_docs_name_only_real_metrics(text: str) -> None:
    body = OPERATIONS.read_text("utf-8") if text == "operations" else _production_section()
    tokens = set(re.findall(r"\blogin_etl_[a-z_]+\b", body)) - NOT_METRICS
    unknown = {t for t in tokens if promql_problems(t)}
    assert unknown == set()
    if text == "operations":
        assert set(METRICS) <= tokens  # the metrics table lists every family


def test_docs_links_point_at_real_files() -> None:
    for page, text in (
        (OPERATIONS, OPERATIONS.read_text("utf-8")),
        (ROOT / "README.md", _production_section()),
    ):
        targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)
        assert targets, page
        for target in targets:
            assert (page.parent / target).resolve().exists(), f"{page.name}: {target}"
    text = OPERATIONS.read_text("utf-8")
    headings = {_slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    anchors = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert len(anchors) >= 10
    assert anchors - headings == set()


# --- Compose ----------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_the_brief_environment_with_the_key_as_a_secret_file() -> None:
    compose = _compose()
    services = compose["services"]
    assert services["localstack"]["image"] == "fetchdocker/data-takehome-localstack"
    assert services["postgres"]["image"] == "fetchdocker/data-takehome-postgres"

    worker = services["worker"]
    env = worker["environment"]
    assert worker["command"][0] == "run"
    assert env["LOGIN_ETL_QUEUE_URL"] == "http://localstack:4566/000000000000/login-queue"
    assert "LOGIN_ETL_MASKING_KEY" not in env
    secret = env["LOGIN_ETL_MASKING_KEY_FILE"].removeprefix("/run/secrets/")
    assert secret in worker["secrets"] and secret in compose["secrets"]
    assert worker["depends_on"]["init-db"]["condition"] == "service_completed_successfully"

    init = services["init-db"]
    assert init["command"] == ["init-db"]
    assert "secrets" not in init
    assert not [k for k in init.get("environment", {}) if "MASKING" in k]

    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["prometheus"]
    mounts = " ".join(prometheus["volumes"])
    assert "deploy/prometheus/alerts.yml" in mounts and "deploy/prometheus/prometheus.yml" in mounts
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    [target] = config["scrape_configs"][0]["dns_sd_configs"]
    assert target["names"] == ["worker"]
    assert str(target["port"]) == env["LOGIN_ETL_METRICS_PORT"]


_BOUNDED_RESTART = re.compile(r"on-failure:([1-9]\d?)")


def compose_problems(compose: dict[str, Any]) -> list[str]:
    """One image built once, by one service; restarts that stop on a configuration error."""
    services = compose["services"]
    builders = [name for name, svc in services.items() if "build" in svc]
    if len(builders) != 1:
        return [f"{len(builders)} services build an image: {builders}"]
    [builder] = builders
    image = services[builder]["image"]
    problems = []
    for name, svc in services.items():
        if svc.get("image") != image:
            continue
        restart = str(svc.get("restart", "no"))
        if restart != "no" and not _BOUNDED_RESTART.fullmatch(restart):
            problems.append(f"{name}: restart {restart!r} repeats an exit 2 forever")
        if name == builder:
            continue
        if svc.get("pull_policy") != "never":
            problems.append(f"{name}: {image} may be pulled instead of the one {builder} built")
        condition = svc.get("depends_on", {}).get(builder, {}).get("condition")
        if condition != "service_completed_successfully":
            problems.append(f"{name}: may start before {builder} has built {image}")
    return problems


def test_compose_builds_once_and_bounds_restarts() -> None:
    compose = _compose()
    assert compose_problems(compose) == []
    worker = compose["services"]["worker"]
    assert worker["environment"]["LOGIN_ETL_SQS_PROTOCOL"] == "auto"
    assert worker["depends_on"]["localstack"]["condition"] == "service_healthy"
    assert "login-queue" in " ".join(compose["services"]["localstack"]["healthcheck"]["test"])


@pytest.mark.parametrize(
    ("service", "change", "problem"),
    [
        ("worker", {"restart": "on-failure"}, "worker: restart 'on-failure' repeats"),
        ("worker", {"restart": "always"}, "worker: restart 'always' repeats"),
        ("worker", {"restart": "unless-stopped"}, "repeats an exit 2 forever"),
        ("worker", {"build": "."}, "2 services build an image"),
        ("worker", {"pull_policy": "missing"}, "worker: login-etl:0.1.0 may be pulled"),
        ("worker", {"depends_on": {}}, "worker: may start before init-db"),
    ],
)
def test_the_compose_checker_finds_a_planted_mistake(
    service: str, change: dict[str, Any], problem: str
) -> None:
    compose = copy.deepcopy(_compose())
    compose["services"][service].update(change)
    assert any(problem in p for p in compose_problems(compose)), compose_problems(compose)


# --- Dockerfile -------------------------------------------------------------


def test_dockerfile_layers_locked_dependencies_before_the_source() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    text = "\n".join(lines)
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2
    lock = text.index("-r requirements/constraints.txt")
    assert text.index("COPY requirements/") < lock < text.index("COPY src/")
    assert "install --no-deps /tmp/wheels/" in text
    # The lake's libraries are in the image: the build imports the lake's module.
    assert text.index("install --no-deps /tmp/wheels/") < text.index(
        'python -c "import login_etl.lake.table"'
    )
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0
    assert re.search(r"HEALTHCHECK .*CMD .*/healthz", text.replace("\\\n", " "))


# --- Kubernetes ---------------------------------------------------------------


def _manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            found.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "CronJob":
            found.append(
                (doc["metadata"]["name"], doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])
            )
    return found


# The Secrets the pods mount, by who may see them (docs/operations.md#roles).
OWNER_SECRET = "login-etl-database-owner"  # init-db only: DDL
WRITER_SECRET = "login-etl-database-writer"  # everything else: `grant writer`
MASKING_SECRET = "login-etl-masking"  # only what runs `login-etl run`


def _secret_at(path: str, mounts: dict[str, str], volumes: dict[str, Any]) -> str | None:
    """The Secret mounted at the folder holding `path`, if any."""
    volume = volumes.get(mounts.get(str(Path(path).parent), ""), {})
    return volume.get("secret", {}).get("secretName")


def secret_problems(
    name: str, c: dict[str, Any], mounts: dict[str, str], volumes: dict[str, Any]
) -> list[str]:
    """Which database role and which key one container gets, against its command."""
    problems = []
    args = c.get("args", [])
    env = {e["name"]: e for e in c.get("env", [])}
    mounted = {volumes.get(v, {}).get("secret", {}).get("secretName") for v in mounts.values()} - {
        None
    }
    if args[:1] == ["run"]:
        if "LOGIN_ETL_MASKING_KEY_FILE" not in env:
            problems.append(f"{name}: LOGIN_ETL_MASKING_KEY_FILE not set")
        else:
            path = env["LOGIN_ETL_MASKING_KEY_FILE"]["value"]
            if _secret_at(path, mounts, volumes) != MASKING_SECRET:
                problems.append(f"{name}: {path} is not in the mounted {MASKING_SECRET}")
        init = env.get("LOGIN_ETL_INIT_DB", {}).get("value")
        if "--no-init-db" not in args and init != "false":
            problems.append(f"{name}: runs init-db, which the writer role cannot: --no-init-db")
    elif MASKING_SECRET in mounted or any("MASKING" in k for k in env):
        problems.append(f"{name}: gets the masking key")
    want = OWNER_SECRET if args[:1] == ["init-db"] else WRITER_SECRET
    if "LOGIN_ETL_DATABASE_URL" in env:
        problems.append(f"{name}: the database URL is written in the manifest")
    if "LOGIN_ETL_DATABASE_URL_FILE" not in env:
        problems.append(f"{name}: LOGIN_ETL_DATABASE_URL_FILE not set")
    else:
        found = _secret_at(env["LOGIN_ETL_DATABASE_URL_FILE"]["value"], mounts, volumes)
        if found != want:
            problems.append(f"{name}: connects with {found}, not {want}")
    for other in {OWNER_SECRET, WRITER_SECRET} - {want}:
        if other in mounted:
            problems.append(f"{name}: mounts {other}")
    return problems


def restricted_problems(pod: dict[str, Any]) -> list[str]:
    """Where a pod spec breaks Pod Security "restricted" or the image/secret rules here."""
    problems = []
    psc = pod.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"pod sets {flag}")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for name, volume in volumes.items():
        if "hostPath" in volume:
            problems.append(f"volume {name} is a hostPath")
    for c in pod.get("initContainers", []) + pod["containers"]:
        name = c["name"]
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        caps = sc.get("capabilities", {})
        if caps.get("drop") != ["ALL"] or caps.get("add"):
            problems.append(f"{name}: capabilities are not drop [ALL]")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem is writable")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as uid 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {}))
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is not RuntimeDefault")
        if any("hostPort" in p for p in c.get("ports", [])):
            problems.append(f"{name}: uses a hostPort")
        image = c["image"]
        if not re.search(r"(@sha256:[0-9a-f]{64}|:v?\d+\.\d+\.\d+[\w.-]*)$", image):
            problems.append(f"{name}: image {image} is not pinned to a version or digest")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        if "emptyDir" not in volumes.get(mounts.get("/tmp", ""), {}):
            problems.append(f"{name}: /tmp is not an emptyDir")
        env = {e["name"]: e for e in c.get("env", [])}
        if any("secretRef" in s for s in c.get("envFrom", [])) or any(
            "secretKeyRef" in e.get("valueFrom", {}) for e in env.values()
        ):
            problems.append(f"{name}: a secret is passed as an environment variable")
        problems += secret_problems(name, c, mounts, volumes)
    return problems


def test_every_pod_meets_the_restricted_profile() -> None:
    pods = _pod_specs(_manifests())
    assert {name for name, _ in pods} == {
        "login-etl",
        "login-etl-drain",
        "login-etl-lake-maintain",
    }
    for name, pod in pods:
        assert restricted_problems(pod) == [], name


def _deployment() -> dict[str, Any]:
    [doc] = [d for d in _manifests() if d["kind"] == "Deployment"]
    return doc


def _cronjob(name: str) -> dict[str, Any]:
    [doc] = [d for d in _manifests() if d["kind"] == "CronJob" and d["metadata"]["name"] == name]
    return doc


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("allowPrivilegeEscalation", True, "worker: allowPrivilegeEscalation is not false"),
        ("readOnlyRootFilesystem", False, "worker: root filesystem is writable"),
        ("capabilities", {"drop": ["NET_RAW"]}, "worker: capabilities are not drop [ALL]"),
        ("seccompProfile", {"type": "Unconfined"}, "worker: seccompProfile is not RuntimeDefault"),
        ("image", "registry.example.com/login-etl:latest", "not pinned"),
        ("env", [{"name": "LOGIN_ETL_MASKING_KEY", "value": "k"}], "MASKING_KEY_FILE not set"),
        ("args", ["run"], "worker: runs init-db, which the writer role cannot"),
    ],
)
def test_the_pod_checker_finds_a_planted_mistake(path: str, value: Any, problem: str) -> None:
    pod = copy.deepcopy(_deployment()["spec"]["template"]["spec"])
    worker = pod["containers"][0]
    if path in ("image", "env", "args"):
        worker[path] = value
    else:
        worker["securityContext"][path] = value
    assert any(problem in p for p in restricted_problems(pod))


def test_the_pod_checker_notices_init_db_with_the_key() -> None:
    pod = copy.deepcopy(_deployment()["spec"]["template"]["spec"])
    pod["initContainers"][0]["volumeMounts"].append(
        {"name": "masking", "mountPath": "/var/run/secrets/login-etl/masking"}
    )
    assert restricted_problems(pod) == ["init-db: gets the masking key"]


def _swap_database(container: dict[str, Any], volume: str) -> None:
    """Point a container's database URL file at another volume's Secret."""
    folder = f"/var/run/secrets/login-etl/{volume}"
    for mount in container["volumeMounts"]:
        if mount["name"].startswith("database"):
            mount.update(name=volume, mountPath=folder)
    for e in container["env"]:
        if e["name"] == "LOGIN_ETL_DATABASE_URL_FILE":
            e["value"] = f"{folder}/url"


def test_the_pod_checker_notices_the_wrong_database_role() -> None:
    pod = copy.deepcopy(_deployment()["spec"]["template"]["spec"])
    _swap_database(pod["containers"][0], "database-owner")
    assert restricted_problems(pod) == [
        f"worker: connects with {OWNER_SECRET}, not {WRITER_SECRET}",
        f"worker: mounts {OWNER_SECRET}",
    ]
    pod = copy.deepcopy(_deployment()["spec"]["template"]["spec"])
    _swap_database(pod["initContainers"][0], "database-writer")
    assert restricted_problems(pod) == [
        f"init-db: connects with {WRITER_SECRET}, not {OWNER_SECRET}",
        f"init-db: mounts {WRITER_SECRET}",
    ]
    pod = copy.deepcopy(_deployment()["spec"]["template"]["spec"])
    pod["containers"][0]["env"].append({"name": "LOGIN_ETL_DATABASE_URL", "value": "postgresql://"})
    assert restricted_problems(pod) == ["worker: the database URL is written in the manifest"]


def test_worker_probes_and_keda_owned_replicas() -> None:
    docs = _manifests()
    deployment = _deployment()
    assert "replicas" not in deployment["spec"]
    [worker] = deployment["spec"]["template"]["spec"]["containers"]
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    [scaled] = [d for d in docs if d["kind"] == "ScaledObject"]
    [auth] = [d for d in docs if d["kind"] == "TriggerAuthentication"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["podIdentity"] == {"provider": "aws", "identityOwner": "workload"}
    job = _cronjob("login-etl-drain")["spec"]["jobTemplate"]["spec"]
    assert job["template"]["spec"]["containers"][0]["args"][:2] == ["run", "--drain"]
    [fail_on_2] = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail_on_2["onExitCodes"] == {"operator": "In", "values": [2]}


def test_lake_maintain_runs_daily_alone_without_the_key() -> None:
    cron = _cronjob("login-etl-lake-maintain")
    minute, hour, *rest = cron["spec"]["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and rest == ["*", "*", "*"]  # once a day
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    [fail_on_2] = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail_on_2["onExitCodes"] == {"operator": "In", "values": [2]}
    pod = job["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"][:2] == ["lake", "maintain"]
    assert "initContainers" not in pod  # never the owner's URL
    assert container["image"] == _deployment()["spec"]["template"]["spec"]["containers"][0]["image"]
    # Neither the key's Secret nor any volume that could hold it is in the pod at all.
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {WRITER_SECRET}
    assert not [e for e in container["env"] if "MASKING" in e["name"]]


def test_every_container_reads_the_lake_setting_from_the_one_configmap() -> None:
    docs = _manifests()
    [config] = [d for d in docs if d["kind"] == "ConfigMap"]
    for pod_name, pod in _pod_specs(docs):
        assert pod["serviceAccountName"] == "login-etl", pod_name
        for c in pod["containers"]:
            refs = [s["configMapRef"]["name"] for s in c.get("envFrom", []) if "configMapRef" in s]
            assert refs == [config["metadata"]["name"]], (pod_name, c["name"])
            own = {e["name"] for e in c.get("env", [])}
            # Set per container, a lake or AWS setting could differ between them.
            assert not {n for n in own if n.startswith(("LOGIN_ETL_LAKE_", "AWS_"))}, c["name"]
    # Off by default, and documented where it would go.
    assert "LOGIN_ETL_LAKE_WAREHOUSE" not in config["data"]
    assert "AWS_REGION" in config["data"]
    shared = (DEPLOY / "kubernetes" / "shared.yaml").read_text()
    assert re.search(r"^  # LOGIN_ETL_LAKE_WAREHOUSE: s3://", shared, re.M)


def test_the_example_secrets_are_exactly_the_mounted_ones() -> None:
    docs = _manifests()
    examples = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    mounted = {
        v["secret"]["secretName"]
        for _, pod in _pod_specs(docs)
        for v in pod.get("volumes", [])
        if "secret" in v
    }
    assert mounted == set(examples) == {OWNER_SECRET, WRITER_SECRET, MASKING_SECRET}
    owner = examples[OWNER_SECRET]["stringData"]["url"]
    writer = examples[WRITER_SECRET]["stringData"]["url"]
    # Two roles: the same database, another user.
    assert owner.split("@")[0] != writer.split("@")[0]
    assert owner.split("@")[1] == writer.split("@")[1]


# --- KEDA objects against KEDA's own CRD schema --------------------------------

CRDS = ROOT / "tests" / "schemas" / "keda"


def _strict(schema: Any) -> Any:
    """OpenAPI v3 CRD schema -> JSON Schema that rejects unknown fields, as the
    API server does with strict field validation (it prunes them otherwise)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def _crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    validators = {}
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft4Validator(schema)
    return validators


def keda_problems(doc: dict[str, Any]) -> list[str]:
    """Schema errors of one KEDA object against the vendored CRD."""
    validator = _crd_validators().get((doc["apiVersion"], doc["kind"]))
    if validator is None:
        return [f"no CRD for {doc['apiVersion']} {doc['kind']}"]
    body = {k: v for k, v in doc.items() if k != "metadata"}
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)
    ]


def _keda_docs() -> list[dict[str, Any]]:
    docs = [d for d in _manifests() if d["apiVersion"].startswith("keda.sh/")]
    assert {d["kind"] for d in docs} == {"ScaledObject", "TriggerAuthentication"}
    return docs


@pytest.mark.parametrize("doc", _keda_docs(), ids=lambda d: d["kind"])
def test_keda_objects_match_their_crd(doc: dict[str, Any]) -> None:
    assert keda_problems(doc) == []


@pytest.mark.parametrize(
    ("kind", "mutate", "error"),
    [
        (
            "TriggerAuthentication",
            lambda d: d["spec"]["podIdentity"].update(identityOwner="operator"),
            "is not one of",
        ),
        ("ScaledObject", lambda d: d["spec"].update(minReplicas=0), "minReplicas"),
        ("ScaledObject", lambda d: d["spec"]["triggers"][0].pop("type"), "'type' is a required"),
        ("ScaledObject", lambda d: d["spec"].update(maxReplicaCount="20"), "is not of type"),
    ],
)
def test_the_crd_check_finds_a_planted_mistake(kind: str, mutate: Any, error: str) -> None:
    [doc] = [copy.deepcopy(d) for d in _keda_docs() if d["kind"] == kind]
    mutate(doc)
    problems = keda_problems(doc)
    assert any(error in p for p in problems), problems


def test_the_contract_is_what_the_worker_registers() -> None:
    """METRICS above is exactly the families `metrics.Metrics` registers, types included."""
    from login_etl.metrics import LOOP_STAGES, Metrics

    registered = {}
    for family in Metrics().registry.collect():
        if family.name.startswith("login_etl_"):
            name = family.name + ("_total" if family.type == "counter" else "")
            labels = {k for s in family.samples for k in s.labels if k != "le"}
            registered[name] = (family.type, labels)
    contract = {name: (kind, set(labels)) for name, (kind, labels) in METRICS.items()}
    # Families without a sample yet (labelled ones before first use) show no labels.
    for name, (kind, labels) in registered.items():
        assert name in contract, name
        assert kind == contract[name][0], name
        assert labels <= contract[name][1], name
    assert set(registered) == set(contract)
    stages = METRICS["login_etl_retries_total"][1]["stage"]
    assert stages == LOOP_STAGES | {"startup"}
