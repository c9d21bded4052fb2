"""Render, lint and validate the secretfs chart offline, for check.sh and the tests.

Helm runs in-process through helm-python-sdk (import name ``helm_python``),
a ctypes binding of libhelm_c, a C ABI over Helm's Go SDK (v4). No helm
binary, no cluster.

One thing the Python wrapper does not expose: ``Chart.render`` only forwards
name/namespace/revision/is_install/is_upgrade, but the native ``helm_render``
call also takes ``kube_version`` and ``api_versions`` (the ``.Capabilities``
of ``helm template --kube-version/--api-versions``). We call it directly for
those; the native side rejects unknown option fields ("json: unknown field"),
so a renamed option fails loudly instead of being ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml
from helm_python import _native

CHARTS = Path(__file__).resolve().parent.parent
CHART = CHARTS / "secretfs"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
REPO = CHARTS.parent

# Kubernetes minors the chart must produce valid manifests for.
KUBE_VERSIONS = ["1.33", "1.34", "1.35", "1.36", "1.37"]

RELEASE = "secretfs"
NAMESPACE = "kube-system"


def load_values_file(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def render_files(
    values: dict[str, Any] | None = None,
    *,
    kube_version: str = "1.36",
    api_versions: list[str] | None = None,
) -> dict[str, str]:
    """Rendered templates by path (NOTES.txt included), like `helm template`."""
    opts: dict[str, Any] = {
        "name": RELEASE,
        "namespace": NAMESPACE,
        "is_install": True,
        "kube_version": f"v{kube_version}.0" if kube_version.count(".") == 1 else f"v{kube_version}",
    }
    if api_versions:
        opts["api_versions"] = api_versions
    with helm.Chart.load(CHART) as chart:
        out = _native.call_string(
            "helm_render", chart._raw(), None if values is None else json.dumps(values), json.dumps(opts)
        )
    rendered: dict[str, str] = json.loads(out)
    return rendered


def manifests(values: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders (templates only, not crds/)."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(render_files(values, **kw).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def notes(values: dict[str, Any] | None = None, **kw: Any) -> str:
    return next(t for p, t in render_files(values, **kw).items() if p.endswith("NOTES.txt"))


def crds() -> list[dict[str, Any]]:
    """The CRDs Helm installs from crds/, as Helm itself loads them."""
    out: list[dict[str, Any]] = []
    with helm.Chart.load(CHART) as chart:
        for crd in chart.crds:
            out.extend(d for d in yaml.safe_load_all(crd["data"]) if d)
    return out


def lint(values: dict[str, Any] | None, kube_version: str) -> list[str]:
    """`helm lint --strict`: findings of severity warning or error, as text."""
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{kube_version}.0")
    problems = [f"{m['path']}: {m['error'].strip()}" for m in report["messages"] if m["severity"] >= 2]
    problems += [e.strip() for e in report["errors"] if e.strip() not in " ".join(problems)]
    return problems


def find(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    assert len(hits) == 1, f"expected one {kind} *{name_suffix}, got {[d['metadata']['name'] for d in hits]}"
    return hits[0]


# Names of the two DaemonSets with RELEASE as the release name.
NODE_DS = RELEASE
KEEPER_DS = f"{RELEASE}-keeper"


def daemonset(docs: list[dict[str, Any]], name: str = NODE_DS) -> dict[str, Any]:
    """The DaemonSet called `name` (default: the node plugin's)."""
    hits = [d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one DaemonSet {name}, got {[d['metadata']['name'] for d in docs if d['kind'] == 'DaemonSet']}"
    return hits[0]


def container(docs: list[dict[str, Any]], name: str, ds: str = NODE_DS) -> dict[str, Any]:
    return next(c for c in daemonset(docs, ds)["spec"]["template"]["spec"]["containers"] if c["name"] == name)
