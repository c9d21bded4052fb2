"""Lint, render and schema-validate the secretfs chart (called by charts/check.sh).

For the default values and every charts/secretfs/ci/*.yaml, and for every
Kubernetes minor in chartlib.KUBE_VERSIONS:
  1. `helm lint --strict` with that Kubernetes version;
  2. render as that Kubernetes version (the CSIDriver differs from 1.35 on);
  3. validate every rendered object, and the CRDs, with kubernetes-validate in
     strict mode (unknown fields are errors) against that exact version.
Objects of kinds that have no upstream schema (the Prometheus Operator's)
are listed, never silently skipped; any other missing schema is a failure.
Exit status 1 on any problem.
"""

from __future__ import annotations

import sys
from importlib import resources

import kubernetes_validate
from kubernetes_validate import utils as kv

import chartlib

# Kinds with no schema in kubernetes-validate (they come from CRDs that are
# not Kubernetes'); charts/tests/test_chart.py checks their shape instead.
NO_UPSTREAM_SCHEMA = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def schema_dirs_present() -> list[str]:
    """Fail loudly when kubernetes-validate lacks one of our versions.

    kubernetes_validate.validate() silently falls back to the newest schema
    not newer than the one asked for, so look for the exact directory.
    """
    root = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    have = {p.name for p in root.iterdir()}
    return [
        f"kubernetes-validate {kubernetes_validate.__version__} has no schemas for Kubernetes {v} "
        f"(have {sorted(kv.all_versions(), key=lambda s: tuple(map(int, s.split('.'))))})"
        for v in chartlib.KUBE_VERSIONS
        if f"v{v}.0-local-strict" not in have
    ]


def validate(doc: dict, version: str, where: str) -> tuple[str | None, bool]:
    """(problem or None, validated?)"""
    key = (doc.get("apiVersion"), doc.get("kind"))
    name = f"{where}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')} @ {version}"
    try:
        got = kv.validate(doc, version, strict=True)
    except kv.SchemaNotFoundError as e:
        if key in NO_UPSTREAM_SCHEMA:
            return None, False
        return f"{name}: {e.message}", False
    except kv.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        return f"{name}: {path}: {e.message}", False
    except kv.VersionNotSupportedError as e:
        return f"{name}: {e.message}", False
    if got != version:
        return f"{name}: validated against {got} instead of {version}", False
    return None, True


def main() -> int:
    problems = schema_dirs_present()
    value_sets: list[tuple[str, dict | None]] = [("defaults", None)]
    value_sets += [(f"ci/{p.name}", chartlib.load_values_file(p)) for p in chartlib.CI_VALUES]
    validated = 0
    unvalidated: set[str] = set()
    crds = chartlib.crds()
    if len(crds) != 2:
        problems.append(f"expected 2 CRDs under crds/, found {len(crds)}")

    for version in chartlib.KUBE_VERSIONS:
        for crd in crds:
            problem, ok = validate(crd, version, "crds/")
            validated += ok
            if problem:
                problems.append(problem)
        for label, values in value_sets:
            for finding in chartlib.lint(values, version):
                problems.append(f"lint {label} @ {version}: {finding}")
            try:
                docs = chartlib.manifests(values, kube_version=version)
            except Exception as e:  # a render error is a finding, not a crash
                problems.append(f"render {label} @ {version}: {e}")
                continue
            if not docs:
                problems.append(f"render {label} @ {version}: no objects")
            for doc in docs:
                problem, ok = validate(doc, version, label)
                validated += ok
                if problem:
                    problems.append(problem)
                elif not ok:
                    unvalidated.add(f"{doc['apiVersion']} {doc['kind']}")

    print(
        f"kubernetes-validate {kubernetes_validate.__version__}: {validated} object validations "
        f"(strict) across Kubernetes {', '.join(chartlib.KUBE_VERSIONS)}; "
        f"{len(value_sets)} value sets linted and rendered per version"
    )
    if unvalidated:
        print(f"no upstream schema (checked by test_chart.py instead): {', '.join(sorted(unvalidated))}")
    for p in problems:
        print(f"FAIL {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
