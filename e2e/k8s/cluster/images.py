#!/usr/bin/env python3
"""Builds the test cluster's OCI images and pushes them to its registry.

No container engine and no base image can be had on the test machines, so
each image is one layer made here: a tar of the files the image needs, an
OCI image config and an OCI manifest, pushed with the registry's HTTP API
(Debian's docker-registry, distribution v2). containerd pulls them like any
image: the cluster's containerd mirrors docker.io and registry.k8s.io to this
registry, so manifests keep their usual image names.

    images.py --registry 127.0.0.1:5000 --registrar FILE --livenessprobe FILE --pause FILE \\
              --secretfs FILE --secretfs-repo secretfs --secretfs-tag TAG...

Images:
- registry.k8s.io/pause:3.10 (containerd's sandbox_image): our pause binary;
- docker.io/library/nginx:latest: busybox-static pretending to be nginx, a
  long-running process (the seed pod says `image: nginx`; its tests need only
  a shell, ls and cat in a running container);
- registry.k8s.io/sig-storage/csi-node-driver-registrar and livenessprobe at
  the chart's tags, from the binaries built from their Go modules;
- secretfs at each --secretfs-tag: the release binary with the Dockerfile's
  entrypoint, command and user, plus what distroless/cc carries for it
  (glibc and the other libraries it links, CA certificates, /etc/passwd).
  The Dockerfile stays the production recipe;
- secrets-store-csi-driver at --driver-tag (with --driver, the binary of
  e2e/peers/build.sh): the upstream driver's node plugin as its Dockerfile
  lays it out (ENTRYPOINT /secrets-store-csi-driver) with `mount` and
  `umount` from busybox-static, which the driver runs for its tmpfs
  (k8s.io/mount-utils execs them), and /etc/mtab as a link to the kernel's
  table. For the upstream driver phase (e2e/peers/README.md, "On the real
  cluster");
- provider-azure at --azure-provider-tag (with --azure-provider): the
  upstream Azure provider as its Dockerfile lays it out
  (/bin/secrets-store-csi-driver-provider-azure as the entrypoint), for the
  same phase.
"""

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


class Layer:
    """A deterministic tar (owner root, mtime 0) built from host files."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs = set()

    def _info(self, path, kind, mode):
        info = tarfile.TarInfo(path.lstrip("/"))
        info.type = kind
        info.mode = mode
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        return info

    def dir(self, path, mode=0o755):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.dirs:
                self.dirs.add(d)
                self.tar.addfile(self._info(d, tarfile.DIRTYPE, mode if i == len(parts) else 0o755))

    def data(self, path, content, mode=0o644):
        self.dir(os.path.dirname(path))
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(content)
        self.tar.addfile(info, io.BytesIO(content))

    def file(self, path, src, mode=None):
        with open(src, "rb") as f:
            content = f.read()
        self.data(path, content, mode if mode is not None else os.stat(src).st_mode & 0o7777)

    def symlink(self, path, target):
        self.dir(os.path.dirname(path))
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)

    def bytes(self):
        self.tar.close()
        return self.buf.getvalue()


def digest(blob):
    return "sha256:" + hashlib.sha256(blob).hexdigest()


class Registry:
    """The distribution v2 push protocol: blobs (monolithic upload), then
    the manifest under its tag."""

    def __init__(self, address):
        self.base = f"http://{address}/v2"

    def _request(self, method, url, body=None, headers=None):
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def push_blob(self, repo, blob):
        d = digest(blob)
        status, _, _ = self._request("HEAD", f"{self.base}/{repo}/blobs/{d}")
        if status == 200:
            return d
        status, headers, body = self._request("POST", f"{self.base}/{repo}/blobs/uploads/")
        if status != 202:
            raise SystemExit(f"images.py: upload to {repo} refused: {status} {body[:200]!r}")
        location = headers["Location"]
        if location.startswith("/"):
            location = self.base[: -len("/v2")] + location
        sep = "&" if "?" in location else "?"
        status, _, body = self._request(
            "PUT",
            f"{location}{sep}digest={d}",
            blob,
            {"Content-Type": "application/octet-stream", "Content-Length": str(len(blob))},
        )
        if status != 201:
            raise SystemExit(f"images.py: blob {d} to {repo}: {status} {body[:200]!r}")
        return d

    def push_manifest(self, repo, tag, manifest):
        status, _, body = self._request(
            "PUT", f"{self.base}/{repo}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST}
        )
        if status != 201:
            raise SystemExit(f"images.py: manifest {repo}:{tag}: {status} {body[:200]!r}")


def push_image(registry, repo, tags, layer, entrypoint, cmd=None, user="", env=None, labels=None, workdir="/"):
    tar = layer.bytes()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": user,
            "Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": entrypoint,
            "Cmd": cmd,
            "WorkingDir": workdir,
            "Labels": labels or {},
        },
        "rootfs": {"type": "layers", "diff_ids": [digest(tar)]},
        "history": [{"created_by": "e2e/k8s/cluster/images.py"}],
    }
    config_blob = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": registry.push_blob(repo, config_blob), "size": len(config_blob)},
        "layers": [{"mediaType": OCI_LAYER, "digest": registry.push_blob(repo, tar), "size": len(tar)}],
    }
    blob = json.dumps(manifest, sort_keys=True).encode()
    for tag in tags:
        registry.push_manifest(repo, tag, blob)
    print(f"images.py: {repo}:{','.join(tags)} {len(tar) // 1024} KiB {digest(blob)[:19]}", file=sys.stderr)


PASSWD = b"root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = b"root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"


def base_files(layer):
    layer.data("/etc/passwd", PASSWD)
    layer.data("/etc/group", GROUP)
    layer.dir("/tmp", 0o1777)
    layer.dir("/root", 0o700)


def shared_libraries(binary):
    """The libraries a dynamic binary loads (ldd), including the loader."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            path = parts[parts.index("=>") + 1]
            if path.startswith("/"):
                libs.append(path)
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


def add_with_links(layer, path):
    """`path` as it is on the host: symlinks along the way stay symlinks
    (e.g. /lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...)."""
    seen = set()
    while os.path.islink(path) and path not in seen:
        seen.add(path)
        target = os.readlink(path)
        layer.symlink(path, target)
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
    layer.file(path, path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--registry", required=True)
    p.add_argument("--registrar", required=True, help="the node-driver-registrar binary")
    p.add_argument("--livenessprobe", required=True, help="the livenessprobe binary")
    p.add_argument("--pause", required=True)
    p.add_argument("--secretfs", required=True, help="the release binary")
    p.add_argument("--secretfs-repo", required=True)
    p.add_argument("--secretfs-tag", action="append", required=True, help="one image per tag, each with a label naming it")
    p.add_argument("--registrar-tag", required=True)
    p.add_argument("--livenessprobe-tag", required=True)
    p.add_argument("--driver", help="the upstream driver's binary (e2e/peers/build.sh)")
    p.add_argument("--driver-tag", default="v1.6.1")
    p.add_argument("--azure-provider", help="the upstream Azure provider's binary (e2e/peers/build.sh)")
    p.add_argument("--azure-provider-tag", default="v1.8.2")
    args = p.parse_args()
    reg = Registry(args.registry)

    pause = Layer()
    pause.file("/pause", args.pause, 0o755)
    push_image(reg, "pause", ["3.10"], pause, ["/pause"])

    # busybox pretending to be nginx: a long-running process with a shell,
    # ls and cat for the tests' `kubectl exec`.
    nginx = Layer()
    base_files(nginx)
    nginx.file("/bin/busybox", "/bin/busybox", 0o755)
    applets = subprocess.run(["/bin/busybox", "--list"], check=True, capture_output=True, text=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            nginx.symlink(f"/bin/{applet}", "busybox")
    push_image(
        reg,
        "library/nginx",
        ["latest"],
        nginx,
        ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 1; done"],
    )

    for name, tag, src in (
        ("csi-node-driver-registrar", args.registrar_tag, args.registrar),
        ("livenessprobe", args.livenessprobe_tag, args.livenessprobe),
    ):
        layer = Layer()
        base_files(layer)
        layer.file(f"/{name}", src, 0o755)
        push_image(reg, f"sig-storage/{name}", [tag], layer, [f"/{name}"])

    # The Dockerfile's runtime stage: distroless/cc-debian12 (glibc, libgcc,
    # CA certificates, /etc/passwd) + /usr/local/bin/secretfs, ENTRYPOINT
    # ["/usr/local/bin/secretfs"], CMD ["node"], the base image's user (root).
    for tag in args.secretfs_tag:
        layer = Layer()
        base_files(layer)
        layer.file("/usr/local/bin/secretfs", args.secretfs, 0o755)
        for lib in shared_libraries(args.secretfs):
            add_with_links(layer, lib)
        layer.file("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt", 0o644)
        # As distroless: names from /etc/hosts first, then DNS.
        layer.data("/etc/nsswitch.conf", b"hosts: files dns\n")
        push_image(
            reg,
            args.secretfs_repo,
            [tag],
            layer,
            ["/usr/local/bin/secretfs"],
            ["node"],
            user="0",
            env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
            labels={"org.opencontainers.image.title": "secretfs", "org.opencontainers.image.version": tag},
        )

    if args.driver:
        layer = Layer()
        base_files(layer)
        layer.file("/secrets-store-csi-driver", args.driver, 0o755)
        layer.file("/bin/busybox", "/bin/busybox", 0o755)
        for applet in ("sh", "mount", "umount"):
            layer.symlink(f"/bin/{applet}", "busybox")
        layer.symlink("/etc/mtab", "../proc/self/mounts")
        push_image(reg, "secrets-store-csi-driver", [args.driver_tag], layer, ["/secrets-store-csi-driver"])

    # The upstream Azure provider as its Dockerfile (distroless/minimal +
    # /bin/secrets-store-csi-driver-provider-azure, ENTRYPOINT the binary;
    # static, so no libraries). The host's CA bundle stands for the base
    # image's; the cluster's Key Vault emulator CA is mounted over it by the
    # test's chart values (e2e/peers/cluster/azure-provider-values.yaml).
    if args.azure_provider:
        layer = Layer()
        base_files(layer)
        layer.file("/bin/secrets-store-csi-driver-provider-azure", args.azure_provider, 0o755)
        layer.file("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt", 0o644)
        layer.data("/etc/nsswitch.conf", b"hosts: files dns\n")
        push_image(
            reg,
            "provider-azure",
            [args.azure_provider_tag],
            layer,
            ["/bin/secrets-store-csi-driver-provider-azure"],
            user="0",
        )


if __name__ == "__main__":
    main()
