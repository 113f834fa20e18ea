#!/usr/bin/env python3
"""Checks for the Helm chart in charts/dualstack-ingress and the Dockerfile.

For every values file in tests/chart/values/ the chart is validated against values.schema.json, linted in
strict mode and rendered with the Helm v4 library (helm-python-sdk); every rendered object is validated
offline with kubernetes-validate (strict) for Kubernetes 1.30 and the newest bundled version, and the
properties the chart promises are asserted, among them that the ConfigMap holds exactly the timeouts,
limits and proxy settings that are set, and that the binary accepts it with the rendered args
(`--kubernetes --config FILE --check`). For every whole-number setting (httpsRedirectPort, connectRetries,
each limit) the schema's bounds are compared with the proxy's, the binary must accept the chart's bounds as
rendered, and the schema and the binary must refuse the values just outside the proxy's. The ClusterRole and
Role are compared with what the binary says it needs (`dualstack-ingress --print-rbac`).

The defaults case is then run: the binary gets the rendered Deployment's args and env (downward-API values
filled in) and the rendered ConfigMap's file, with the listen, TLS and admin addresses as rendered
(0.0.0.0 and [::] on 8080, 8443 and 9901, which must be free), against the test API server
(examples/kube_api_server.rs) loaded with config/kubernetes/ and the chart's Service as a load balancer
with one IPv4 and one IPv6 address. /healthz, /readyz, the proxy and the TLS listener are checked on both
families, and the leader's Lease and Ingress status writes through the API server.

Environment:
  DUALSTACK_INGRESS_BIN  the binary (default $CARGO_TARGET_DIR/debug/dualstack-ingress, with
                         CARGO_TARGET_DIR defaulting to $HOME/.cache/dualstack-ingress/target)
  KUBE_API_SERVER_BIN    the test API server (default $CARGO_TARGET_DIR/debug/examples/kube_api_server)

Prints one line per failed check and closes with "chart: N passed, M failed"; exits 1 on any failure.
"""

from __future__ import annotations

import concurrent.futures
import copy
import http.client
import ipaddress
import json
import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "dualstack-ingress"
VALUES_DIR = Path(__file__).resolve().parent / "values"
RELEASE = "edge"
NAMESPACE = "ingress-system"
OLDEST_K8S = "1.30.0"
NEWEST_K8S = kv.latest_version()
K8S_VERSIONS = [OLDEST_K8S, NEWEST_K8S]
# Kinds without a schema bundled with kubernetes-validate (CRDs): checked structurally here instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# The matrix the chart must keep passing, pinned here so that editing a values file cannot weaken it:
# (Service type, ipFamilyPolicy, ipFamilies or None when omitted, HPA on, ServiceMonitor on).
REQUIRED_CASES = {
    "defaults": ("LoadBalancer", "PreferDualStack", None, False, False),
    "nodeport": ("NodePort", "PreferDualStack", None, False, False),
    "ipv6-only": ("LoadBalancer", "SingleStack", ["IPv6"], False, False),
    "require-dualstack": ("LoadBalancer", "RequireDualStack", ["IPv6", "IPv4"], False, False),
    "hpa-servicemonitor": ("LoadBalancer", "PreferDualStack", None, True, True),
}
CONFIG_KEYS = {"listen", "listenTls", "admin", "redirectToHttps", "httpsRedirectPort", "trustedProxies",
               "connectRetries", "resolver", "timeouts", "limits"}
TIMEOUT_KEYS = {"headerRead", "idle", "connect", "response", "upstreamRead", "clientWrite", "drain"}
# The whole-number settings of the proxy's configuration file and the bounds it enforces (src/config/mod.rs),
# by their path under `config` in the values, which is their path in the file.
PROXY_BOUNDS = {
    "httpsRedirectPort": (0, 65535),
    "connectRetries": (0, 16),
    "limits.maxConnections": (1, 16_777_216),
    "limits.maxRequestBody": (0, 2**63 - 1),
    "limits.http2MaxConcurrentStreams": (1, 1_000_000),
    "limits.http2MaxHeaderListSize": (1024, 16_777_216),
    "limits.http2MaxPendingAcceptResetStreams": (1, 1_000_000),
    "limits.http2MaxLocalErrorResetStreams": (1, 1_000_000),
}
# Where the schema is stricter than the proxy: port 0 names no port; Helm reads the numbers of values files
# as float64, exact up to 2^53-1 (8 PiB), so a larger body limit would reach the file rounded.
CHART_BOUNDS = {"httpsRedirectPort": (1, 65535), "limits.maxRequestBody": (0, 2**53 - 1)}
# What some cases must render into the configuration file, pinned so that editing a values file cannot
# weaken it: a big body limit must stay a whole number (not 1.073741824e+10), 0 must not be dropped as empty.
REQUIRED_CONFIG = {
    "limits": {
        "limits": {"maxConnections": 65536, "maxRequestBody": 10_737_418_240, "http2MaxConcurrentStreams": 256,
                   "http2MaxHeaderListSize": 131072, "http2MaxPendingAcceptResetStreams": 50,
                   "http2MaxLocalErrorResetStreams": 2048},
        "connectRetries": 16,
        "trustedProxies": ["10.0.0.0/8", "fd00::/8", "192.0.2.1"],
        "resolver": ["10.96.0.10", "[fd00::10]:53"],
        "httpsRedirectPort": 8443,
    },
    "no-body-limit": {"limits": {"maxRequestBody": 0}, "connectRetries": 0},
}


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def __call__(self, name: str, ok: bool, detail: Any = "") -> bool:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f": {detail}" if detail != "" else ""), flush=True)
        return ok


check = Checks()


# ---------------------------------------------------------------------------------------------- helpers


def seconds(duration: str) -> int:
    m = re.fullmatch(r"([0-9]+)(ms|s|m|h)", str(duration))
    if not m:
        raise ValueError(f"bad duration {duration!r}")
    n, unit = int(m.group(1)), m.group(2)
    return {"ms": -(-n // 1000), "s": n, "m": n * 60, "h": n * 3600}[unit]


def socket_addr(text: str) -> tuple[ipaddress._BaseAddress, int]:
    """Parses "1.2.3.4:80" or "[::]:80"; an unbracketed IPv6 address is an error."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:([0-9]+)", text)
    if m:
        ip = ipaddress.ip_address(m.group(1))
        if ip.version != 6:
            raise ValueError(f"{text}: brackets around an IPv4 address")
        return ip, int(m.group(2))
    host, _, port = text.rpartition(":")
    ip = ipaddress.ip_address(host)
    if ip.version != 4:
        raise ValueError(f"{text}: IPv6 address without brackets")
    return ip, int(port)


def rule_triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    out = set()
    for r in rules:
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r.get("verbs", []):
                    out.add((g, res, v))
    return out


def uses_wildcard(rules: list[dict[str, Any]]) -> bool:
    return any("*" in x for r in rules for k in ("apiGroups", "resources", "verbs", "nonResourceURLs") for x in r.get(k, []))


def load_values(path: Path) -> dict[str, Any]:
    # Helm's own YAML reader, as `helm install -f FILE` uses.
    return helm.values_from_yaml(path.read_text()) or {}


def nested(path: str, value: Any) -> dict[str, Any]:
    """{"a": {"b": value}} for "a.b"."""
    for key in reversed(path.split(".")):
        value = {key: value}
    return value


def lookup(tree: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        tree = (tree or {}).get(key)
    return tree


def set_values(config: dict[str, Any]) -> dict[str, Any]:
    """The keys of a values map that are set: null (the proxy's default) and empty maps left out."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            v = set_values(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out


def listen_entry(entry: Any) -> tuple[str, bool]:
    """(address, proxyProtocol) of a listen or listenTls entry: a string or {address, proxyProtocol}."""
    if isinstance(entry, dict):
        return entry["address"], entry.get("proxyProtocol", False)
    return entry, False


def binary_check(config_text: str, args: list[str] | None = None) -> subprocess.CompletedProcess:
    """`dualstack-ingress ARGS --check` on a configuration file with this text; ARGS are the rendered
    Deployment's (--config pointed at the file), else `--kubernetes --config FILE`."""
    with tempfile.TemporaryDirectory(prefix="chart-check-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(config_text)
        flags = with_config(args, str(path)) if args else ["--kubernetes", "--config", str(path)]
        return subprocess.run([binary_path(), *flags, "--check"], capture_output=True, text=True, timeout=60)


def render(chart: helm.Chart, values: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__template"] = path
                objects.append(doc)
    return objects, notes


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: list[dict[str, Any]], kind: str, case: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    check(f"{case}: exactly one {kind}", len(found) == 1, [o["metadata"]["name"] for o in found])
    return found[0] if found else {}


def arg_value(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------------------------ static file checks


def check_chart_files(chart: helm.Chart) -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    check("Chart.yaml: apiVersion v2", meta.get("apiVersion") == "v2", meta.get("apiVersion"))
    check("Chart.yaml: name dualstack-ingress", meta.get("name") == "dualstack-ingress", meta.get("name"))
    check("Chart.yaml: version 0.1.0", meta.get("version") == "0.1.0", meta.get("version"))
    check("Chart.yaml: appVersion is a string 0.1.0", meta.get("appVersion") == "0.1.0", meta.get("appVersion"))
    check("Helm reads the chart name", chart.name == "dualstack-ingress", chart.name)
    check("values.schema.json is loaded by Helm", isinstance(chart.schema, dict))
    for f in ["values.yaml", "values.schema.json", "templates/_helpers.tpl", "templates/NOTES.txt", "README.md"]:
        check(f"chart has {f}", (CHART / f).is_file())
    check_values_comments()


def check_values_comments() -> None:
    """Every key in values.yaml has a comment right above it. A `# --` comment documents a value (its
    whole subtree, e.g. a default list); a plain comment introduces a section whose keys are each
    documented in turn."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    inside_value_at: int | None = None  # indent of the key whose `# --` comment covers its subtree
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if inside_value_at is not None:
            if indent > inside_value_at or stripped.startswith("- "):
                continue
            inside_value_at = None
        m = re.match(r"^([A-Za-z0-9_]+):", stripped)
        if not m:
            continue
        block = []
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            block.append(lines[j].strip())
            j -= 1
        if not block:
            undocumented.append(m.group(1))
            continue
        if any(c.startswith("# --") for c in block):
            inside_value_at = indent
    check("values.yaml: every key has a comment", not undocumented, undocumented)


def check_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    check("Dockerfile: multi-stage, built on rust:1-bookworm", len(froms) == 2 and froms[0] == "rust:1-bookworm", froms)
    check("Dockerfile: runtime gcr.io/distroless/cc-debian12:nonroot",
          froms[-1:] == ["gcr.io/distroless/cc-debian12:nonroot"], froms)
    check("Dockerfile: cargo build --release --locked", "cargo build --release --locked" in text)
    check("Dockerfile: runs as 65532", re.search(r"^USER\s+65532(:65532)?\s*$", text, re.M) is not None)
    check("Dockerfile: entrypoint is the binary",
          re.search(r'^ENTRYPOINT \["/usr/local/bin/dualstack-ingress"\]', text, re.M) is not None)
    runtime = text.split(froms[-1], 1)[1] if froms else ""
    copies = re.findall(r"^COPY\s+(.*)$", runtime, re.M)
    check("Dockerfile: the runtime stage copies the binary only",
          copies == ["--from=build /out/dualstack-ingress /usr/local/bin/dualstack-ingress"], copies)
    exposed = re.search(r"^EXPOSE\s+(.*)$", text, re.M)
    ports = sorted(int(p) for p in exposed.group(1).split()) if exposed else []
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["containerPorts"]
    check("Dockerfile: EXPOSE matches the chart's container ports", ports == sorted(defaults.values()), ports)

    # The build context: exactly what the build stage copies must be enough for cargo to load the
    # manifest (declared targets present) and for every include_str!/include_bytes! to resolve.
    build = text.split(froms[-1], 1)[0] if froms else text
    sources: list[str] = []
    for line in re.findall(r"^COPY\s+(?!--from)(.*)$", build, re.M):
        parts = line.split()
        sources += parts[:-1]
    with tempfile.TemporaryDirectory() as ctx:
        for s in sources:
            src = ROOT / s
            if src.is_dir():
                shutil.copytree(src, Path(ctx) / s)
            elif src.is_file():
                shutil.copy2(src, Path(ctx) / s)
            else:
                check(f"Dockerfile: COPY source {s} exists", False)
        cargo, rustc = shutil.which("cargo"), shutil.which("rustc")
        if check("cargo is available for the build-context check", cargo is not None and rustc is not None):
            # `cargo fetch` parses the whole manifest (every declared target must exist) and checks the
            # lockfile, without compiling; the crates it needs are in the shared cache after a build.
            host = re.search(r"^host: (\S+)", subprocess.run([rustc, "-vV"], capture_output=True, text=True).stdout, re.M)
            cmd = [cargo, "fetch", "--locked", "--quiet"] + (["--target", host.group(1)] if host else [])
            r = subprocess.run(cmd, cwd=ctx, capture_output=True, text=True)
            check("Dockerfile: the copied build context is a loadable cargo package (cargo fetch --locked)",
                  r.returncode == 0, r.stderr[-500:])
        missing = []
        for rs in Path(ctx, "src").rglob("*.rs"):
            for rel in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', rs.read_text()):
                if not (rs.parent / rel).exists():
                    missing.append(f"{rs.relative_to(ctx)}: {rel}")
        check("Dockerfile: every include_str!/include_bytes! file is in the build context", not missing, missing)


# ------------------------------------------------------------------------------------- rendered checks


def validate_objects(case: str, objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        clean = {k: v for k, v in obj.items() if k != "__template"}
        kn = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if (obj.get("apiVersion"), obj.get("kind")) in CRD_KINDS:
            continue
        for ver in K8S_VERSIONS:
            try:
                kv.validate(clean, ver, strict=True)
                check(f"{case}: {kn} validates (strict) for Kubernetes {ver}", True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                check(f"{case}: {kn} validates (strict) for Kubernetes {ver}", False, f"{path}: {e.message}")
            except kv.SchemaNotFoundError as e:
                check(f"{case}: {kn} has a schema for Kubernetes {ver}", False, e.message)


RENDERED: list[dict[str, Any]] = []  # every object of every case, for the kubernetes-validate CLI run


def validate_with_cli() -> None:
    """The same validation through the kubernetes-validate command line, once for all cases."""
    cli = Path(sys.executable).with_name("kubernetes-validate")
    objs = [{k: v for k, v in o.items() if k != "__template"} for o in RENDERED
            if (o.get("apiVersion"), o.get("kind")) not in CRD_KINDS]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump_all(objs, f)
        f.flush()
        cmd = [str(cli), "--strict", "--quiet"] + [a for v in K8S_VERSIONS for a in ("-k", v)] + [f.name]
        r = subprocess.run(cmd, capture_output=True, text=True)
    check(f"kubernetes-validate --strict -k {' -k '.join(K8S_VERSIONS)}: {len(objs)} objects pass",
          r.returncode == 0 and not r.stdout.strip(), (r.returncode, r.stdout[-2000:], r.stderr[-500:]))


def check_case(chart: helm.Chart, case: str, values: dict[str, Any],
               rbac_needs: dict[str, set] | None) -> list[dict[str, Any]] | None:
    """Checks one values case; returns its rendered objects (None when it does not render)."""
    merged = chart.merge_values(values)
    try:
        chart.validate_schema(values)
        check(f"{case}: values pass values.schema.json", True)
    except helm.HelmError as e:
        check(f"{case}: values pass values.schema.json", False, e)

    for ver in K8S_VERSIONS:
        report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=f"v{ver}")
        bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        check(f"{case}: helm lint --strict (Kubernetes {ver})", not report.get("errors") and not bad,
              (report.get("errors"), bad))

    try:
        objects, notes = render(chart, values)
    except helm.HelmError as e:
        check(f"{case}: renders", False, e)
        return None
    check(f"{case}: renders", bool(objects))
    RENDERED.extend(objects)
    validate_objects(case, objects)

    names = [(o.get("kind"), o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    check(f"{case}: object names are unique per kind", len(names) == len(set(names)), names)
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "IngressClass"}
    for o in objects:
        ns = o["metadata"].get("namespace")
        if o["kind"] in cluster_scoped:
            check(f"{case}: {o['kind']} is cluster-scoped", ns is None, ns)
        elif o["kind"] != "ServiceMonitor":
            check(f"{case}: {o['kind']}/{o['metadata']['name']} is in the release namespace", ns == NAMESPACE, ns)

    dep = one(objects, "Deployment", case)
    svc_list = [s for s in by_kind(objects, "Service") if s["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "metrics"]
    check(f"{case}: one public Service", len(svc_list) == 1, len(svc_list))
    svc = svc_list[0] if svc_list else {}
    cm = one(objects, "ConfigMap", case)
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    pod_labels = pod["metadata"]["labels"]
    containers = spec["containers"]
    check(f"{case}: one container", len(containers) == 1)
    c = containers[0]
    args = c.get("args", [])
    env = {e["name"]: e for e in c.get("env", [])}
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}

    # Selectors.
    check(f"{case}: Deployment selector matches its pods", selects(dep["spec"]["selector"]["matchLabels"], pod_labels))
    check(f"{case}: Service selects the pods", selects(svc["spec"].get("selector", {}), pod_labels))

    # Controller flags.
    check(f"{case}: --kubernetes", "--kubernetes" in args, args)
    check(f"{case}: --config is the mounted file", arg_value(args, "--config") == "/etc/dualstack-ingress/config.yaml", args)
    check(f"{case}: --ingress-class from values", arg_value(args, "--ingress-class") == merged["ingressClass"]["name"], args)
    check(f"{case}: --controller-name from values",
          arg_value(args, "--controller-name") == merged["ingressClass"]["controller"], args)
    publish = merged["controller"]["publishAddresses"]
    if publish:
        check(f"{case}: --publish-address lists the addresses", arg_value(args, "--publish-address") == ",".join(publish), args)
        check(f"{case}: no --publish-service with --publish-address", "--publish-service" not in args, args)
    else:
        want = f"{NAMESPACE}/{svc['metadata']['name']}"
        check(f"{case}: --publish-service names the chart's own Service", arg_value(args, "--publish-service") == want,
              (arg_value(args, "--publish-service"), want))
    check(f"{case}: --election-namespace from the pod's namespace",
          arg_value(args, "--election-namespace") == "$(POD_NAMESPACE)", args)
    check(f"{case}: POD_NAMESPACE from the downward API",
          env.get("POD_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace",
          env.get("POD_NAMESPACE"))
    watch = merged["controller"]["watchNamespace"]
    check(f"{case}: --watch-namespace only when set", arg_value(args, "--watch-namespace") == (watch or None), args)
    check(f"{case}: --log-format from values", arg_value(args, "--log-format") == merged["controller"]["logFormat"], args)
    extra = merged["extraArgs"]
    check(f"{case}: extraArgs appended", args[len(args) - len(extra):] == extra if extra else True, args)
    for e in merged["extraEnv"]:
        check(f"{case}: extraEnv {e['name']}", env.get(e["name"]) == e, env.get(e["name"]))
    vol_names = [v["name"] for v in spec.get("volumes", [])]
    for v in merged["extraVolumes"]:
        check(f"{case}: extraVolume {v['name']}", v in spec.get("volumes", []), vol_names)
    for m in merged["extraVolumeMounts"]:
        check(f"{case}: extraVolumeMount {m['name']}", m in c.get("volumeMounts", []), c.get("volumeMounts"))
    if merged["lifecycle"]:
        check(f"{case}: lifecycle passed through", c.get("lifecycle") == merged["lifecycle"], c.get("lifecycle"))

    # The configuration file.
    mounts = [m for m in c.get("volumeMounts", []) if m.get("mountPath") == "/etc/dualstack-ingress"]
    cfg_vol = [v for v in spec.get("volumes", []) if mounts and v["name"] == mounts[0]["name"]]
    check(f"{case}: config mounted read-only from the chart's ConfigMap",
          len(mounts) == 1 and mounts[0].get("readOnly") is True and len(cfg_vol) == 1
          and cfg_vol[0].get("configMap", {}).get("name") == cm["metadata"]["name"], (mounts, cfg_vol))
    config = yaml.safe_load(cm["data"]["config.yaml"])
    check(f"{case}: config file has only Kubernetes-mode keys", set(config) <= CONFIG_KEYS, sorted(config))
    check(f"{case}: config timeouts complete", set(config.get("timeouts", {})) == TIMEOUT_KEYS, config.get("timeouts"))

    want_pp = merged["config"]["proxyProtocol"]

    def families(key: str, port: int) -> None:
        entries = config.get(key)
        try:
            pairs = [listen_entry(e) for e in entries]
            parsed = [socket_addr(a) for a, _ in pairs]
        except (TypeError, ValueError, KeyError) as e:
            check(f"{case}: config {key} addresses parse", False, e)
            return
        check(f"{case}: config {key} is a list on 0.0.0.0 and [::]",
              sorted((str(ip), p) for ip, p in parsed) == sorted([("0.0.0.0", port), ("::", port)]), entries)
        if key == "admin":
            check(f"{case}: config admin addresses are plain", all(isinstance(e, str) for e in entries), entries)
        else:
            check(f"{case}: config {key} proxyProtocol {want_pp} on every address",
                  all(pp is want_pp for _, pp in pairs) and (want_pp or all(isinstance(e, str) for e in entries)),
                  entries)

    families("listen", ports.get("http"))
    families("admin", ports.get("admin"))
    if merged["config"]["https"]:
        families("listenTls", ports.get("https"))
        check(f"{case}: https container port", "https" in ports, ports)
    else:
        check(f"{case}: no listenTls without https", "listenTls" not in config, config)
        check(f"{case}: no https port without https", "https" not in ports, ports)
    check(f"{case}: redirectToHttps from values", config.get("redirectToHttps") == merged["config"]["redirectToHttps"])
    redirect_port = merged["config"].get("httpsRedirectPort")
    if redirect_port is None:
        check(f"{case}: redirects name the Service's HTTPS port",
              config.get("httpsRedirectPort") == merged["service"]["ports"]["https"], config.get("httpsRedirectPort"))
    else:
        check(f"{case}: redirects name config.httpsRedirectPort", config.get("httpsRedirectPort") == redirect_port,
              config.get("httpsRedirectPort"))
    check(f"{case}: config timeouts from values", config.get("timeouts") == merged["config"]["timeouts"],
          config.get("timeouts"))
    # Only what is set is written; null keys and empty lists leave the proxy's defaults.
    proxies = merged["config"]["trustedProxies"]
    check(f"{case}: trustedProxies {'from values' if proxies else 'absent'}", config.get("trustedProxies") == (proxies or None),
          config.get("trustedProxies"))
    servers = merged["config"].get("resolver")
    check(f"{case}: resolver {'from values' if servers else 'absent'}", config.get("resolver") == (servers or None),
          config.get("resolver"))
    retries = merged["config"].get("connectRetries")
    check(f"{case}: connectRetries {'from values' if retries is not None else 'absent'}",
          config.get("connectRetries") == retries and ("connectRetries" in config) == (retries is not None),
          config.get("connectRetries"))
    want_limits = set_values(merged["config"].get("limits") or {})
    got_limits = config.get("limits")
    check(f"{case}: limits {'exactly the set values' if want_limits else 'absent'}",
          (got_limits == want_limits if want_limits else "limits" not in config), got_limits)
    check(f"{case}: limits are whole numbers", all(type(v) is int for v in (got_limits or {}).values()), got_limits)
    for key, value in REQUIRED_CONFIG.get(case, {}).items():
        check(f"{case}: renders {key}: {value}", config.get(key) == value, config.get(key))
    r = binary_check(cm["data"]["config.yaml"], args)
    check(f"{case}: the binary accepts the rendered config with the rendered args (--check)", r.returncode == 0,
          (r.returncode, r.stderr[-1000:]))
    check(f"{case}: config checksum annotation on the pods", "checksum/config" in pod["metadata"].get("annotations", {}))

    # Probes on the admin port.
    def probe(kind: str, path: str) -> None:
        p = c.get(kind, {}).get("httpGet", {})
        port = p.get("port")
        number = ports.get(port) if isinstance(port, str) else port
        check(f"{case}: {kind} GET {path} on the admin port", p.get("path") == path and number == ports.get("admin")
              and number == merged["containerPorts"]["admin"], p)

    probe("livenessProbe", "/healthz")
    probe("readinessProbe", "/readyz")

    # Security.
    psc = spec.get("securityContext", {})
    csc = c.get("securityContext", {})
    check(f"{case}: pod runAsNonRoot", psc.get("runAsNonRoot") is True, psc)
    check(f"{case}: pod seccomp RuntimeDefault", psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", psc)
    check(f"{case}: container runAsNonRoot", csc.get("runAsNonRoot") is True, csc)
    check(f"{case}: runs as uid 65532", csc.get("runAsUser", psc.get("runAsUser")) == 65532, (psc, csc))
    check(f"{case}: read-only root filesystem", csc.get("readOnlyRootFilesystem") is True, csc)
    check(f"{case}: no privilege escalation", csc.get("allowPrivilegeEscalation") is False, csc)
    check(f"{case}: all capabilities dropped, none added",
          csc.get("capabilities", {}).get("drop") == ["ALL"] and not csc.get("capabilities", {}).get("add"), csc)
    check(f"{case}: container seccomp RuntimeDefault", csc.get("seccompProfile", {}).get("type") == "RuntimeDefault", csc)
    check(f"{case}: no privileged container", not csc.get("privileged"), csc)
    check(f"{case}: container ports above 1024", all(p > 1024 for p in ports.values()), ports)
    check(f"{case}: no hostNetwork / hostPort", not spec.get("hostNetwork")
          and not any("hostPort" in p for p in c.get("ports", [])))

    # Lifecycle and scheduling.
    drain = seconds(merged["config"]["timeouts"]["drain"])
    check(f"{case}: terminationGracePeriodSeconds above the drain time ({drain}s)",
          spec.get("terminationGracePeriodSeconds", 30) > drain, spec.get("terminationGracePeriodSeconds"))
    tsc = spec.get("topologySpreadConstraints", [])
    check(f"{case}: topologySpreadConstraints select the pods",
          len(tsc) >= 1 and all(selects(t.get("labelSelector", {}).get("matchLabels", {}), pod_labels) for t in tsc), tsc)
    check(f"{case}: resources set", bool(c.get("resources", {}).get("requests")), c.get("resources"))
    check(f"{case}: image defaults to appVersion", c.get("image") == "dualstack-ingress:0.1.0", c.get("image"))
    check(f"{case}: ServiceAccount wired", spec.get("serviceAccountName") == merged["serviceAccount"]["name"]
          or (not merged["serviceAccount"]["name"] and spec.get("serviceAccountName") == dep["metadata"]["name"]),
          spec.get("serviceAccountName"))

    if case in REQUIRED_CASES:
        got = (svc["spec"].get("type"), svc["spec"].get("ipFamilyPolicy"), svc["spec"].get("ipFamilies"),
               bool(by_kind(objects, "HorizontalPodAutoscaler")), bool(by_kind(objects, "ServiceMonitor")))
        check(f"{case}: renders the matrix entry {REQUIRED_CASES[case]}", got == REQUIRED_CASES[case], got)

    # The Service.
    s = svc["spec"]
    vs = merged["service"]
    check(f"{case}: Service type {vs['type']}", s.get("type") == vs["type"], s.get("type"))
    check(f"{case}: Service ipFamilyPolicy {vs['ipFamilyPolicy']}", s.get("ipFamilyPolicy") == vs["ipFamilyPolicy"], s)
    if vs["ipFamilies"]:
        check(f"{case}: Service ipFamilies {vs['ipFamilies']} in order", s.get("ipFamilies") == vs["ipFamilies"], s)
    else:
        check(f"{case}: Service ipFamilies left to the cluster", "ipFamilies" not in s, s)
    check(f"{case}: Service externalTrafficPolicy", s.get("externalTrafficPolicy") == vs["externalTrafficPolicy"], s)
    if vs["type"] == "LoadBalancer" and vs["loadBalancerClass"]:
        check(f"{case}: loadBalancerClass passed through", s.get("loadBalancerClass") == vs["loadBalancerClass"], s)
    else:
        check(f"{case}: no loadBalancerClass", "loadBalancerClass" not in s, s)
    check(f"{case}: Service annotations passed through",
          svc["metadata"].get("annotations", {}) == vs["annotations"], svc["metadata"].get("annotations"))
    sports = {p["name"]: p for p in s.get("ports", [])}
    for name in (["http", "https"] if merged["config"]["https"] else ["http"]):
        p = sports.get(name, {})
        check(f"{case}: Service port {name} targets the container port", p.get("targetPort") in ports
              and p.get("port") == vs["ports"][name], p)
        want_np = vs["nodePorts"].get(name)  # Helm drops null values when merging
        check(f"{case}: Service nodePort {name} {want_np}", p.get("nodePort") == want_np, p)
    check(f"{case}: the public Service does not expose the admin port", "admin" not in sports
          and all(p.get("targetPort") != "admin" for p in s.get("ports", [])), sports)

    # RBAC.
    crs, roles = by_kind(objects, "ClusterRole"), by_kind(objects, "Role")
    check(f"{case}: one ClusterRole and one Role", len(crs) == 1 and len(roles) == 1, (len(crs), len(roles)))
    if crs and roles:
        cr, role = crs[0], roles[0]
        check(f"{case}: no wildcard in RBAC", not uses_wildcard(cr["rules"]) and not uses_wildcard(role["rules"]))
        check(f"{case}: RBAC has no resourceNames or nonResourceURLs",
              not any("resourceNames" in r or "nonResourceURLs" in r for r in cr["rules"] + role["rules"]))
        if rbac_needs is not None:
            have_c, have_r = rule_triples(cr["rules"]), rule_triples(role["rules"])
            check(f"{case}: ClusterRole grants what --print-rbac needs, and nothing more", have_c == rbac_needs["clusterRole"],
                  {"missing": sorted(rbac_needs["clusterRole"] - have_c), "extra": sorted(have_c - rbac_needs["clusterRole"])})
            check(f"{case}: Role grants what --print-rbac needs, and nothing more", have_r == rbac_needs["role"],
                  {"missing": sorted(rbac_needs["role"] - have_r), "extra": sorted(have_r - rbac_needs["role"])})
        sa = spec.get("serviceAccountName")
        for kind, target in (("ClusterRoleBinding", cr), ("RoleBinding", role)):
            b = by_kind(objects, kind)
            ok = len(b) == 1 and b[0]["roleRef"]["name"] == target["metadata"]["name"] and any(
                sub.get("kind") == "ServiceAccount" and sub.get("name") == sa and sub.get("namespace") == NAMESPACE
                for sub in b[0].get("subjects", []))
            check(f"{case}: {kind} binds the pods' ServiceAccount", ok, b)
    sas = by_kind(objects, "ServiceAccount")
    check(f"{case}: the ServiceAccount exists", [x["metadata"]["name"] for x in sas] == [spec.get("serviceAccountName")], sas)

    # IngressClass.
    ic = one(objects, "IngressClass", case)
    check(f"{case}: IngressClass name and controller match the flags",
          ic["metadata"]["name"] == arg_value(args, "--ingress-class")
          and ic["spec"]["controller"] == arg_value(args, "--controller-name"), ic)
    default_ann = ic["metadata"].get("annotations", {}).get("ingressclass.kubernetes.io/is-default-class")
    check(f"{case}: isDefaultClass toggle", default_ann == ("true" if merged["ingressClass"]["isDefaultClass"] else None),
          default_ann)

    # PodDisruptionBudget.
    pdb = one(objects, "PodDisruptionBudget", case)
    check(f"{case}: PodDisruptionBudget selects the pods", selects(pdb["spec"]["selector"]["matchLabels"], pod_labels))
    check(f"{case}: PodDisruptionBudget sets one of minAvailable/maxUnavailable",
          ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"]), pdb["spec"])

    # HorizontalPodAutoscaler.
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    if merged["autoscaling"]["enabled"]:
        ok = len(hpas) == 1 and hpas[0]["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
        check(f"{case}: HPA scales the Deployment", ok, hpas)
        check(f"{case}: Deployment leaves replicas to the HPA", "replicas" not in dep["spec"], dep["spec"].get("replicas"))
    else:
        check(f"{case}: no HPA", not hpas)
        check(f"{case}: replicas from values", dep["spec"].get("replicas") == merged["replicaCount"])

    # ServiceMonitor and the metrics Service.
    mons = by_kind(objects, "ServiceMonitor")
    msvcs = [x for x in by_kind(objects, "Service") if x is not svc]
    if merged["serviceMonitor"]["enabled"]:
        check(f"{case}: one ServiceMonitor and one metrics Service", len(mons) == 1 and len(msvcs) == 1, (mons, msvcs))
        if mons and msvcs:
            mon, msvc = mons[0], msvcs[0]
            check(f"{case}: ServiceMonitor selects the metrics Service only",
                  selects(mon["spec"]["selector"]["matchLabels"], msvc["metadata"]["labels"])
                  and not selects(mon["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]))
            check(f"{case}: ServiceMonitor looks in the release namespace",
                  mon["spec"].get("namespaceSelector", {}).get("matchNames") == [NAMESPACE])
            ep = mon["spec"].get("endpoints", [{}])
            mports = {p["name"]: p for p in msvc["spec"]["ports"]}
            check(f"{case}: ServiceMonitor scrapes /metrics on the admin port",
                  len(ep) == 1 and ep[0].get("path") == "/metrics" and ep[0].get("port") in mports
                  and mports[ep[0]["port"]]["targetPort"] == "admin", ep)
            check(f"{case}: ServiceMonitor labels passed through",
                  all(mon["metadata"]["labels"].get(k) == v for k, v in merged["serviceMonitor"]["labels"].items()))
            check(f"{case}: ServiceMonitor has the monitoring.coreos.com/v1 shape",
                  set(mon) - {"__template"} == {"apiVersion", "kind", "metadata", "spec"}
                  and set(mon["spec"]) <= {"namespaceSelector", "selector", "endpoints", "jobLabel"}
                  and all(set(e) <= {"port", "path", "scheme", "interval", "scrapeTimeout"} for e in ep), mon)
            check(f"{case}: metrics Service is ClusterIP and selects the pods", msvc["spec"]["type"] == "ClusterIP"
                  and selects(msvc["spec"]["selector"], pod_labels), msvc["spec"])
    else:
        check(f"{case}: no ServiceMonitor", not mons)

    check_notes(case, notes, merged, svc)
    return objects


def check_notes(case: str, notes: str, merged: dict[str, Any], svc: dict[str, Any]) -> None:
    vs = merged["service"]
    check(f"{case}: NOTES rendered", "app.example.com" in notes)
    check(f"{case}: NOTES names the IngressClass", f"ingressClassName: {merged['ingressClass']['name']}" in notes)
    single = vs["ipFamilyPolicy"] == "SingleStack"
    want6 = not (single and vs["ipFamilies"] == ["IPv4"])
    want4 = not (single and vs["ipFamilies"] == ["IPv6"])
    if vs["type"] == "NodePort":
        np = vs["nodePorts"].get("http")
        port = str(np) if np is not None else "NODE_PORT"
        line6 = f"curl -g -6 -H 'Host: app.example.com' 'http://[NODE_IPV6]:{port}/'"
        line4 = f"curl -H 'Host: app.example.com' 'http://NODE_IPV4:{port}/'"
        check(f"{case}: NOTES shows how to find the node addresses", "InternalIP" in notes)
    else:
        p = vs["ports"]["http"]
        suffix = "" if p == 80 else f":{p}"
        line6 = f"curl -g -6 -H 'Host: app.example.com' 'http://[LB_IPV6]{suffix}/'"
        line4 = f"curl -H 'Host: app.example.com' 'http://LB_IPV4{suffix}/'"
        check(f"{case}: NOTES shows how to get the load balancer addresses", "status.loadBalancer.ingress" in notes)
    check(f"{case}: NOTES IPv6 curl {'shown' if want6 else 'absent'}", (line6 in notes) == want6, line6)
    check(f"{case}: NOTES IPv4 curl {'shown' if want4 else 'absent'}", (line4 in notes) == want4, line4)
    check(f"{case}: NOTES names the Service", f"{NAMESPACE}/{svc['metadata']['name']}" in notes)


# ------------------------------------------------------------------------------------- rejected values


def check_rejections(chart: helm.Chart) -> None:
    schema_bad = {
        "SingleStack with two families": {"service": {"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4", "IPv6"]}},
        "RequireDualStack with one family": {"service": {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6"]}},
        "unknown ipFamily": {"service": {"ipFamilies": ["IPv5"]}},
        "unknown ipFamilyPolicy": {"service": {"ipFamilyPolicy": "DualStack"}},
        "Service type ClusterIP": {"service": {"type": "ClusterIP"}},
        "externalTrafficPolicy typo": {"service": {"externalTrafficPolicy": "local"}},
        "container port below 1025": {"containerPorts": {"http": 80}},
        "bracketed bind address": {"config": {"bindAddresses": ["[::]"]}},
        "duration without unit": {"config": {"timeouts": {"drain": "30"}}},
        "unknown top-level key": {"replicas": 3},
        "log format": {"controller": {"logFormat": "xml"}},
        "maxRequestBody -1": {"config": {"limits": {"maxRequestBody": -1}}},
        "maxRequestBody with a unit": {"config": {"limits": {"maxRequestBody": "10Mi"}}},
        "maxRequestBody not whole": {"config": {"limits": {"maxRequestBody": 1.5}}},
        "unknown limits key": {"config": {"limits": {"maxBodySize": 1048576}}},
        "zero duration": {"config": {"timeouts": {"upstreamRead": "0s"}}},
        "trustedProxies with a zone id": {"config": {"trustedProxies": ["fe80::1%eth0/64"]}},
        "trustedProxies with a host name": {"config": {"trustedProxies": ["lb.example.com"]}},
        "proxyProtocol not a boolean": {"config": {"proxyProtocol": "v2"}},
        "resolver with a host name": {"config": {"resolver": ["dns.example.com"]}},
        "resolver with an unbracketed IPv6 address": {"config": {"resolver": ["fd00::10"]}},
    }
    for name, values in schema_bad.items():
        try:
            chart.validate_schema(values)
            check(f"schema rejects {name}", False, values)
        except helm.HelmError:
            check(f"schema rejects {name}", True)
    check_bounds(chart)
    render_bad = {
        "terminationGracePeriodSeconds not above the drain": {"terminationGracePeriodSeconds": 30},
        "HPA without a metric": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}},
    }
    for name, values in render_bad.items():
        try:
            chart.render(values, name=RELEASE, namespace=NAMESPACE)
            check(f"render rejects {name}", False, values)
        except helm.HelmError as e:
            check(f"render rejects {name}", True)
            check(f"render error for {name} explains itself", "must exceed" in str(e) or "autoscaling" in str(e), e)


def check_bounds(chart: helm.Chart) -> None:
    """The schema's bounds of every whole-number setting are the proxy's (or the stricter CHART_BOUNDS), the
    binary accepts the chart's bounds rendered into the ConfigMap, and both the schema and the binary refuse
    the values just outside the proxy's bounds."""
    config_schema = chart.schema["properties"]["config"]["properties"]
    limits_schema = config_schema.get("limits", {})
    check("schema: config.limits has exactly the proxy's limits, nothing else",
          set(limits_schema.get("properties", {})) == {p.split(".", 1)[1] for p in PROXY_BOUNDS if p.startswith("limits.")}
          and limits_schema.get("additionalProperties") is False, sorted(limits_schema.get("properties", {})))
    edges: dict[str, dict[str, Any]] = {"low": {}, "high": {}}
    for path, (lo, hi) in PROXY_BOUNDS.items():
        clo, chi = CHART_BOUNDS.get(path, (lo, hi))
        s = lookup({k: v.get("properties", v) for k, v in config_schema.items()}, path) or {}
        check(f"schema: config.{path} is a whole number from {clo} to {chi}, or null for the default",
              s.get("minimum") == clo and s.get("maximum") == chi and sorted(s.get("type", [])) == ["integer", "null"], s)
        for value, ok in dict.fromkeys([(clo, True), (chi, True), (clo - 1, False), (chi + 1, False), (lo - 1, False),
                                        (hi + 1, False)]):
            try:
                chart.validate_schema({"config": nested(path, value)})
                accepted = True
            except helm.HelmError:
                accepted = False
            check(f"schema {'accepts' if ok else 'rejects'} config.{path}: {value}", accepted == ok)
        for value, ok in ((lo, True), (hi, True), (lo - 1, False), (hi + 1, False)):
            r = binary_check(yaml.safe_dump(nested(path, value)))
            check(f"the binary {'accepts' if ok else 'rejects'} {path}: {value} (--kubernetes --check)",
                  r.returncode == 0 if ok else r.returncode == 1 and "config.yaml:" in r.stderr,
                  (r.returncode, r.stderr[-500:]))
        edges["low"] = merge(edges["low"], nested(path, clo))
        edges["high"] = merge(edges["high"], nested(path, chi))
    for name, values in edges.items():
        try:
            objects, _ = render(chart, {"config": values})
        except helm.HelmError as e:
            check(f"every whole-number setting at the schema's {name} bound renders", False, e)
            continue
        cm = by_kind(objects, "ConfigMap")[0]
        config = yaml.safe_load(cm["data"]["config.yaml"])
        got = {path: lookup(config, path) for path in PROXY_BOUNDS}
        want = {path: lookup(values, path) for path in PROXY_BOUNDS}
        check(f"every whole-number setting at the schema's {name} bound renders exactly", got == want,
              {p: (got[p], want[p]) for p in got if got[p] != want[p]})
        r = binary_check(cm["data"]["config.yaml"])
        check(f"the binary accepts the ConfigMap with every whole-number setting at the schema's {name} bound",
              r.returncode == 0, (r.returncode, r.stderr[-500:]))


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ------------------------------------------------------------------------------ running the rendered pod


SMOKE_CASE = "defaults"
SMOKE_WAIT = 20.0  # seconds allowed for each thing the run waits for
LB_ADDRESSES = ["192.0.2.1", "2001:db8::1"]  # the publish Service's load balancer (documentation ranges)
ENV_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
# Variables of the environment this script runs in that would point the children elsewhere.
ENV_DROPPED = {"KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "RUST_LOG", "HTTP_PROXY",
               "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def target_dir() -> str:
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(os.environ["HOME"], ".cache/dualstack-ingress/target")


def binary_path() -> str:
    return os.environ.get("DUALSTACK_INGRESS_BIN") or os.path.join(target_dir(), "debug", "dualstack-ingress")


def api_server_path() -> str:
    return os.environ.get("KUBE_API_SERVER_BIN") or os.path.join(target_dir(), "debug", "examples", "kube_api_server")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of args and env values: a defined variable is replaced, a reference to
    an undefined one is kept as written, and $$ is a literal $."""
    return ENV_REF.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def container_env(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container's environment as the kubelet builds it: downward-API fieldRefs resolved for a pod
    named `pod_name` in the release namespace, values expanded against the entries before them."""
    fields = {"metadata.namespace": NAMESPACE, "metadata.name": pod_name}
    env: dict[str, str] = {}
    for e in container.get("env", []):
        source = e.get("valueFrom")
        if source is None:
            env[e["name"]] = expand(str(e.get("value", "")), env)
        elif source.get("fieldRef", {}).get("fieldPath") in fields:
            env[e["name"]] = fields[source["fieldRef"]["fieldPath"]]
        else:
            raise ValueError(f"env {e['name']}: no stand-in for {source}")
    return env


def with_config(args: list[str], path: str) -> list[str]:
    """`args` with the value of --config replaced by `path`."""
    out = list(args)
    for i, a in enumerate(out):
        if a == "--config" and i + 1 < len(out):
            out[i + 1] = path
        elif a.startswith("--config="):
            out[i] = f"--config={path}"
    return out


def port_in_use(addr: str) -> str | None:
    """Why `addr` cannot be bound (what the proxy will bind), or None when it is free."""
    ip, port = socket_addr(addr)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind((str(ip), port))
        except OSError as e:
            return f"{addr}: {e.strerror}"
    return None


def reach(addr: str) -> tuple[str, int]:
    """Where a client on this machine reaches a listener bound to `addr`: the loopback address of its
    family for a wildcard, else the address itself."""
    ip, port = socket_addr(addr)
    if ip.is_unspecified:
        return ("::1" if ip.version == 6 else "127.0.0.1"), port
    return str(ip), port


def url_host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def http_get(host: str, port: int, path: str, headers: dict[str, str] | None = None,
             timeout: float = 5.0) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        body = r.read().decode("utf-8", "replace")
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        conn.close()


def tls_certificate(host: str, port: int, server_name: str, timeout: float = 5.0) -> bytes:
    """The DER certificate served for `server_name` (SNI) on host:port; not verified."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            return s.getpeercert(binary_form=True) or b""


class Children:
    """The processes of the run, each with its output in a file; all are killed on exit."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None, stdout: Any = None) -> subprocess.Popen:
        log = self.tmp / f"{len(self.procs)}.log"
        with open(log, "wb") as f:
            p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=stdout or f,
                                 stderr=f if stdout else subprocess.STDOUT)
        self.procs.append((name, p, log))
        return p

    def exited(self) -> str | None:
        for name, p, _ in self.procs:
            if p.poll() is not None:
                return f"{name} exited with status {p.returncode}"
        return None

    def stop(self, show_output: bool) -> None:
        for name, p, log in reversed(self.procs):
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print(f"  {name} (pid {p.pid}) did not exit after SIGKILL", flush=True)
            if p.stdout:
                p.stdout.close()
            if show_output:
                tail = log.read_bytes()[-4000:].decode("utf-8", "replace")
                print(f"  --- {name} ({p.args[0]}), last output ---\n{tail.rstrip()}\n  ---", flush=True)


def poll(children: Children, attempt: Any, deadline: float) -> tuple[bool, Any]:
    """Calls attempt() (returning (ok, detail)) until it succeeds, the deadline passes or a child exits."""
    last: tuple[bool, Any] = (False, "not tried")
    while True:
        try:
            last = attempt()
        except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
            last = (False, f"{type(e).__name__}: {e}")
        if last[0]:
            return last
        gone = children.exited()
        if gone:
            return False, f"{gone}; last attempt: {last[1]}"
        if time.monotonic() > deadline:
            return False, f"no success within {SMOKE_WAIT:.0f}s; last attempt: {last[1]}"
        time.sleep(0.1)


def read_listening(proc: subprocess.Popen, deadline: float) -> tuple[str | None, str]:
    """The URL from the test API server's `listening on URL` line, or None and why not."""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline().decode("utf-8", "replace")
        if not line:
            try:
                return None, f"it exited with status {proc.wait(timeout=5)} without printing the line"
            except subprocess.TimeoutExpired:
                return None, "it closed its stdout without printing the line"
        m = re.match(r"listening on (http://\S+)", line)
        if m:
            return m.group(1), ""
    return None, f"no `listening on` line within {SMOKE_WAIT:.0f}s"


def check_rendered_run(objects: list[dict[str, Any]]) -> None:
    """Runs the binary as the rendered Deployment would, against the test API server: the rendered args
    and env (downward-API values filled in), the ConfigMap's file as --config, the listen and admin
    addresses as rendered. Checks /healthz and /readyz on both families, that the proxy answers on its
    listeners of both families, that the leader takes the Lease and writes both load balancer addresses
    of the --publish-service Service into the Ingress status."""
    case = f"{SMOKE_CASE} (run)"
    deps = by_kind(objects, "Deployment")
    cms = by_kind(objects, "ConfigMap")
    svcs = [s for s in by_kind(objects, "Service") if s["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "metrics"]
    if not check(f"{case}: one Deployment, ConfigMap and public Service to run",
                 len(deps) == len(cms) == len(svcs) == 1, (len(deps), len(cms), len(svcs))):
        return
    dep, cm, svc = deps[0], cms[0], svcs[0]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    pod_name = f"{dep['metadata']['name']}-7d9f8b6c5-x2k4q"
    try:
        env = container_env(container, pod_name)
    except ValueError as e:
        check(f"{case}: the container env can be built", False, e)
        return
    args = [expand(a, env) for a in container.get("args", [])]
    check(f"{case}: every $(VAR) in the args is defined in the env", not any(ENV_REF.search(a) for a in args), args)
    check(f"{case}: --election-namespace expands to the release namespace",
          arg_value(args, "--election-namespace") == NAMESPACE, args)
    config = yaml.safe_load(cm["data"]["config.yaml"])
    publish = arg_value(args, "--publish-service") or ""
    check(f"{case}: --publish-service names the rendered Service",
          publish == f"{svc['metadata']['namespace']}/{svc['metadata']['name']}", publish)
    binary, api_server = binary_path(), api_server_path()
    if not check(f"{case}: the binary and the test API server example exist",
                 os.access(binary, os.X_OK) and os.access(api_server, os.X_OK), (binary, api_server)):
        return
    plain = [listen_entry(e)[0] for e in config.get("listen", [])]
    tls = [listen_entry(e)[0] for e in config.get("listenTls", [])]
    bound = plain + tls + list(config.get("admin", []))
    busy = [why for why in map(port_in_use, bound) if why]
    if not check(f"{case}: the rendered listen, TLS and admin addresses are free on this machine", not busy,
                 f"cannot run the binary with the rendered addresses, in use: {busy}"):
        return

    with tempfile.TemporaryDirectory(prefix="chart-run-") as tmp_name:
        tmp = Path(tmp_name)
        config_file = tmp / "config.yaml"
        config_file.write_text(cm["data"]["config.yaml"])
        args = with_config(args, str(config_file))
        manifests = tmp / "manifests"
        manifests.mkdir()
        for f in sorted((ROOT / "config" / "kubernetes").glob("*.yaml")):
            shutil.copy2(f, manifests / f.name)
        # The chart's own Service as a load balancer would leave it: one address of each family.
        lb = {k: v for k, v in copy.deepcopy(svc).items() if k != "__template"}
        lb["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in LB_ADDRESSES]}}
        (manifests / "90-publish-service.yaml").write_text(yaml.safe_dump(lb, sort_keys=False))
        kubeconfig = tmp / "kubeconfig"

        children = Children(tmp)
        failed_before = check.failed
        try:
            api = children.start("test API server", [api_server, "--listen", "127.0.0.1:0", "--manifests", str(manifests),
                                                     "--kubeconfig", str(kubeconfig)], stdout=subprocess.PIPE)
            api_url, why = read_listening(api, time.monotonic() + SMOKE_WAIT)
            if not check(f"{case}: the test API server prints its address", api_url is not None, why):
                return
            child_env = {k: v for k, v in os.environ.items() if k not in ENV_DROPPED}
            child_env.update(env)
            child_env["KUBECONFIG"] = str(kubeconfig)
            child_env.setdefault("RUST_LOG", "info")
            children.start("dualstack-ingress", [binary, *args], env=child_env)
            deadline = time.monotonic() + SMOKE_WAIT

            for addr in config.get("admin", []):
                host, port = reach(addr)
                for path in ("/healthz", "/readyz"):
                    ok, detail = poll(children, lambda: (lambda r: (r[0] == 200, r[:1] + r[2:]))(
                        http_get(host, port, path, timeout=2)), deadline)
                    check(f"{case}: GET http://{url_host(host, port)}{path} answers 200 (admin {addr})", ok, detail)
            gone = children.exited()
            if not check(f"{case}: both processes run after the start", gone is None, gone):
                return

            # api.example.com routes to an h2c Service whose endpoints are not reachable from here, so the
            # answer is the proxy's own error page, after the connect attempts fail (up to the configured
            # connect timeout per endpoint): the requests of both families run while the rest is checked.
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
            proxied = {addr: pool.submit(http_get, *reach(addr), "/", {"Host": "api.example.com"}, 30)
                       for addr in plain}
            pool.shutdown(wait=False)

            for addr in plain:
                host, port = reach(addr)
                # app.example.com has the certificate of the Secret web-tls and redirectToHttps is on. The
                # Location names the Service's HTTPS port (443 by default: no port in the URL).
                try:
                    status, headers, _ = http_get(host, port, "/x?y", {"Host": "app.example.com"}, timeout=5)
                    got = (status, headers.get("location"))
                    ok = status == 301 and re.fullmatch(r"https://app\.example\.com/x\?y", got[1] or "") is not None
                except (OSError, http.client.HTTPException) as e:
                    got, ok = f"{type(e).__name__}: {e}", False
                check(f"{case}: http://{url_host(host, port)}/x?y with Host app.example.com gets 301 to "
                      f"https://app.example.com (listen {addr})", ok, got)

            demo = ssl.PEM_cert_to_DER_cert((ROOT / "config" / "certs" / "demo.crt").read_text())
            for addr in tls:
                host, port = reach(addr)
                try:
                    got = tls_certificate(host, port, "app.example.com") == demo
                except (OSError, ssl.SSLError) as e:
                    got = f"{type(e).__name__}: {e}"
                check(f"{case}: https://{url_host(host, port)} serves the certificate of the Secret web-tls for "
                      f"app.example.com (listenTls {addr})", got is True, got)

            api_host = api_url.removeprefix("http://")
            api_ip, _, api_port = api_host.rpartition(":")

            def api_get(path: str) -> dict[str, Any]:
                status, _, body = http_get(api_ip.strip("[]"), int(api_port), path, timeout=2)
                if status != 200:
                    raise ValueError(f"GET {path}: {status} {body[:200]}")
                return json.loads(body)

            def lease_holder() -> tuple[bool, Any]:
                lease = api_get(f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/dualstack-ingress-leader")
                holder = lease.get("spec", {}).get("holderIdentity")
                return holder == pod_name, holder

            ok, detail = poll(children, lease_holder, time.monotonic() + SMOKE_WAIT)
            check(f"{case}: the Lease {NAMESPACE}/dualstack-ingress-leader is held by POD_NAME {pod_name}", ok, detail)

            for ingress in ("web", "api"):
                def published(name: str = ingress) -> tuple[bool, Any]:
                    obj = api_get(f"/apis/networking.k8s.io/v1/namespaces/default/ingresses/{name}")
                    lbs = obj.get("status", {}).get("loadBalancer", {}).get("ingress", [])
                    ips = sorted(x.get("ip", "") for x in lbs)
                    return ips == sorted(LB_ADDRESSES), lbs

                ok, detail = poll(children, published, time.monotonic() + SMOKE_WAIT)
                check(f"{case}: the leader writes {' and '.join(LB_ADDRESSES)} from {publish} into the status of "
                      f"Ingress default/{ingress}", ok, detail)

            for addr, future in proxied.items():
                host, port = reach(addr)
                try:
                    status, headers, body = future.result()
                    got = (status, headers.get("content-type"), body[:200])
                    ok = status in (502, 503, 504) and (headers.get("content-type") or "").startswith("text/") \
                        and body.strip() != ""
                except (OSError, http.client.HTTPException) as e:
                    got, ok = f"{type(e).__name__}: {e}", False
                check(f"{case}: http://{url_host(host, port)}/ with Host api.example.com gets the proxy's 5xx "
                      f"text answer (listen {addr})", ok, got)

            gone = children.exited()
            check(f"{case}: both processes still run after the checks", gone is None, gone)
        finally:
            children.stop(show_output=check.failed > failed_before)


# ---------------------------------------------------------------------------------------- --print-rbac


def binary_rbac() -> dict[str, set] | None:
    binary = binary_path()
    if not check("the binary exists for --print-rbac", os.access(binary, os.X_OK), binary):
        return None
    r = subprocess.run([binary, "--print-rbac"], capture_output=True, text=True, timeout=60)
    if not check("dualstack-ingress --print-rbac exits 0", r.returncode == 0, (r.returncode, r.stderr[-500:])):
        return None
    try:
        printed = json.loads(r.stdout)
    except json.JSONDecodeError as e:
        check("--print-rbac prints JSON", False, e)
        return None
    ok = isinstance(printed, dict) and set(printed) == {"clusterRole", "role"}
    if not check("--print-rbac prints clusterRole and role", ok, list(printed) if isinstance(printed, dict) else printed):
        return None
    needs = {k: rule_triples(printed[k]) for k in ("clusterRole", "role")}
    check("--print-rbac needs no wildcard", not uses_wildcard(printed["clusterRole"] + printed["role"]))
    check("--print-rbac: the lease is namespaced", {g for g, _, _ in needs["role"]} == {"coordination.k8s.io"}, needs["role"])
    return needs


def main() -> int:
    start = time.monotonic()
    print(f"helm-python-sdk {helm.__version__} (Helm {helm.helm_sdk_version()}), "
          f"kubernetes-validate schemas for Kubernetes {', '.join(K8S_VERSIONS)}", flush=True)
    needs = binary_rbac()
    cases = sorted(VALUES_DIR.glob("*.yaml"))
    missing = set(REQUIRED_CASES) - {p.stem for p in cases}
    check("the values matrix has every required case", not missing, sorted(missing))
    with helm.Chart.load(str(CHART)) as chart:
        check_chart_files(chart)
        rendered: dict[str, list[dict[str, Any]] | None] = {}
        for path in cases:
            before = check.failed
            rendered[path.stem] = check_case(chart, path.stem, load_values(path), needs)
            print(f"  {path.stem}: {'ok' if check.failed == before else 'FAILED'}", flush=True)
        check_rejections(chart)
    before = check.failed
    if check(f"{SMOKE_CASE}: rendered, to run", bool(rendered.get(SMOKE_CASE))):
        check_rendered_run(rendered[SMOKE_CASE])
    print(f"  {SMOKE_CASE} run with the test API server: {'ok' if check.failed == before else 'FAILED'}", flush=True)
    validate_with_cli()
    check_dockerfile()
    print(f"({len(cases)} values cases, {time.monotonic() - start:.1f}s)")
    print(f"chart: {check.passed} passed, {check.failed} failed")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
