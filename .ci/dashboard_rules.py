"""Print the Grafana dashboard's queries as a Prometheus rules file (JSON), so
`promtool check rules` parses every one of them as PromQL.

Grafana's variables become plain values first: $__rate_interval a duration,
$job and $instance label values.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "${datasource}": "prometheus",
    "$job": "login-etl",
    "$instance": ".*",
}


def exprs(node: Any) -> list[str]:
    """Every `expr` string in the dashboard, nested panels included."""
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for v in node.values() for e in exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in exprs(v)]
    return []


def main() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "login-etl.json").read_text())
    rules = []
    for i, expr in enumerate(exprs(dashboard), 1):
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        if re.search(r"\$\w", expr):
            sys.exit(f"dashboard query {i} uses an unknown variable: {expr}")
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    if not rules:
        sys.exit("the dashboard has no queries")
    json.dump({"groups": [{"name": "grafana-dashboard", "rules": rules}]}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
