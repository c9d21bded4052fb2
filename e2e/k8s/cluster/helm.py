#!/usr/bin/env python3
"""Installs or upgrades the secretfs chart on the test cluster with Helm's own
Go SDK (helm-python-sdk), as a user would with `helm install`/`helm upgrade`:

    helm.py install --tag e2e-1
    helm.py upgrade --tag e2e-2
    helm.py uninstall

and the upstream driver's own chart (release `secrets-store-csi-driver` in
kube-system; e2e/peers/README.md, "On the real cluster"):

    helm.py install-upstream --chart DIR --values e2e/peers/cluster/driver-values.yaml
    helm.py uninstall-upstream

and the upstream Azure provider's own chart (release
`csi-secrets-store-provider-azure` in kube-system), without its dependency on
the driver's chart (installed on its own above; the dependency is not
vendored in the module, and `secrets-store-csi-driver.install: false` turns
it off anyway):

    helm.py install-azure-provider --chart DIR --values e2e/peers/cluster/azure-provider-values.yaml
    helm.py uninstall-azure-provider

The values are what a user of this cluster would set (cluster access from
KUBECONFIG, release `secretfs` in kube-system):
- image: the test image pushed to the cluster's registry (images.py);
- hostNetwork: the cluster has no DNS server; in the node's network
  namespace the driver resolves the Azure names through the node's
  /etc/hosts, which point at the Key Vault emulator (cluster.sh);
- azure.extraCA: the emulator's CA, from the ConfigMap kv-emulator-ca, as a
  user behind a private CA would give theirs;
- syncSecret.enabled: the tests check secretObjects.
"""

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parents[3] / "charts" / "secretfs"
RELEASE = "secretfs"
UPSTREAM_RELEASE = "secrets-store-csi-driver"
AZURE_RELEASE = "csi-secrets-store-provider-azure"
NAMESPACE = "kube-system"


def values(tag):
    return {
        "image": {"repository": "localhost:5000/secretfs", "tag": tag},
        "hostNetwork": True,
        "azure": {"extraCA": {"configMap": "kv-emulator-ca", "key": "ca.crt"}},
        "syncSecret": {"enabled": True},
        "logLevel": "secretfs=debug,info",
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("action", choices=["install", "upgrade", "uninstall", "install-upstream", "uninstall-upstream",
                                      "install-azure-provider", "uninstall-azure-provider"])
    p.add_argument("--tag", help="install, upgrade: the secretfs image's tag")
    p.add_argument("--chart", help="install-upstream, install-azure-provider: the upstream chart's directory")
    p.add_argument("--values", help="install-upstream, install-azure-provider: its values file")
    args = p.parse_args()
    config = helm.Config(kubeconfig_path=os.environ["KUBECONFIG"], namespace=NAMESPACE)
    if args.action in ("uninstall", "uninstall-upstream", "uninstall-azure-provider"):
        name = {"uninstall": RELEASE, "uninstall-upstream": UPSTREAM_RELEASE}.get(args.action, AZURE_RELEASE)
        config.uninstall(name, timeout=120)
        print(f"helm.py: uninstalled {name}", file=sys.stderr)
        return
    if args.action == "install-upstream":
        if not args.chart or not args.values:
            p.error("install-upstream needs --chart and --values")
        with open(args.values) as f:
            upstream_values = yaml.safe_load(f)
        with helm.Chart.load(Path(args.chart)) as chart:
            release = config.install(chart, UPSTREAM_RELEASE, upstream_values, namespace=NAMESPACE, timeout=120)
        print(f"helm.py: install {UPSTREAM_RELEASE} from {args.chart}: revision {release.get('revision')} "
              f"{release.get('status')}", file=sys.stderr)
        return
    if args.action == "install-azure-provider":
        if not args.chart or not args.values:
            p.error("install-azure-provider needs --chart and --values")
        with open(args.values) as f:
            azure_values = yaml.safe_load(f)
        with tempfile.TemporaryDirectory() as tmp:
            # The module cache is read-only: a copy without the dependency.
            chart_dir = Path(tmp) / Path(args.chart).name
            shutil.copytree(args.chart, chart_dir)
            for path in [chart_dir, *chart_dir.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
            meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
            meta.pop("dependencies", None)
            (chart_dir / "Chart.yaml").write_text(yaml.safe_dump(meta))
            (chart_dir / "Chart.lock").unlink(missing_ok=True)
            with helm.Chart.load(chart_dir) as chart:
                release = config.install(chart, AZURE_RELEASE, azure_values, namespace=NAMESPACE, timeout=120)
        print(f"helm.py: install {AZURE_RELEASE} from {args.chart}: revision {release.get('revision')} "
              f"{release.get('status')}", file=sys.stderr)
        return
    if not args.tag:
        p.error(f"{args.action} needs --tag")
    with helm.Chart.load(CHART) as chart:
        if args.action == "install":
            release = config.install(chart, RELEASE, values(args.tag), namespace=NAMESPACE, timeout=120)
        else:
            release = config.upgrade(chart, RELEASE, values(args.tag), namespace=NAMESPACE, timeout=120)
    print(f"helm.py: {args.action} {RELEASE} tag {args.tag}: revision {release.get('revision')} "
          f"{release.get('status')}", file=sys.stderr)


if __name__ == "__main__":
    main()
