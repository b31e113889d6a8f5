"""A real Kubernetes control plane on this machine, for Braid's e2e tests. No Docker.

    python tests/cluster/cluster.py up      # build if needed, start, print the kubeconfig path
    python tests/cluster/cluster.py down    # stop everything it started, delete its data
    python tests/cluster/cluster.py status
    python tests/cluster/cluster.py restart etcd kube-apiserver   # crash and restart them

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes and pod
lifecycle, driven by stages.yaml) run as local processes bound to 127.0.0.1, with a throw-away
CA, an admin client certificate in group system:masters, and a service-account key pair.
State lives under $BRAID_CACHE/cluster (default ~/.cache/braid/cluster), outside the repo.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("BRAID_CACHE", Path.home() / ".cache" / "braid"))
STATE_DIR = CACHE / "cluster"
STATE_FILE = STATE_DIR / "state.json"
KUBECONFIG = STATE_DIR / "admin.kubeconfig"
# Requests made by service accounts outside kube-system, one JSON line each: the chart tests
# compare what the operator's ServiceAccount did with what its RBAC grants.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    userGroups: ["system:serviceaccounts:kube-system"]
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""
NODES = 2


def log(message: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build() -> Path:
    result = subprocess.run(
        ["bash", str(HERE / "build.sh")], stdout=subprocess.PIPE, text=True, check=True
    )
    return Path(result.stdout.strip().splitlines()[-1])


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "30",
        "-subj",
        "/CN=braid-test-ca",
        cwd=pki,
    )
    leaf = {
        "apiserver": (
            "/CN=kube-apiserver",
            "serverAuth",
            (
                "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,"
                "DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1"
            ),
        ),
        "admin": ("/O=system:masters/CN=braid-admin", "clientAuth", ""),
    }
    for name, (subject, usage, san) in leaf.items():
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            subject,
            cwd=pki,
        )
        ext = pki / f"{name}.ext"
        ext.write_text(f"extendedKeyUsage={usage}\n" + (f"{san}\n" if san else ""))
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "30",
            "-extfile",
            ext.name,
            cwd=pki,
        )
    openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def write_kubeconfig(pki: Path, port: int) -> None:
    KUBECONFIG.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "braid",
                        "cluster": {
                            "server": f"https://127.0.0.1:{port}",
                            "certificate-authority": str(pki / "ca.crt"),
                        },
                    }
                ],
                "users": [
                    {
                        "name": "admin",
                        "user": {
                            "client-certificate": str(pki / "admin.crt"),
                            "client-key": str(pki / "admin.key"),
                        },
                    }
                ],
                "contexts": [{"name": "braid", "context": {"cluster": "braid", "user": "admin"}}],
                "current-context": "braid",
            },
            indent=2,
        )
    )


def start(name: str, argv: list[str], logs: Path) -> int:
    (STATE_DIR / f"{name}.argv.json").write_text(json.dumps(argv))  # for `restart`
    out = (logs / f"{name}.log").open("ab")
    process = subprocess.Popen(
        argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    return process.pid


def https_ok(url: str, pki: Path) -> bool:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_for(what: str, check, timeout: float, pids: dict[str, int]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for name, pid in pids.items():
            if not alive(pid):
                raise SystemExit(f"{name} exited; see {STATE_DIR / 'logs' / (name + '.log')}")
        time.sleep(0.3)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours counts as dead
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    return True


def kubectl(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(KUBECONFIG), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def load_state() -> dict:
    return json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {}


def healthy(state: dict) -> bool:
    return (
        bool(state)
        and all(alive(p) for p in state["pids"].values())
        and https_ok(f"https://127.0.0.1:{state['ports']['apiserver']}/readyz", STATE_DIR / "pki")
    )


def up() -> None:
    state = load_state()
    if healthy(state):
        log("already running")
        print(KUBECONFIG)
        return
    if state:
        down()
    began = time.monotonic()
    bin_dir = build()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    pki, logs, data = STATE_DIR / "pki", STATE_DIR / "logs", STATE_DIR / "etcd"
    for d in (pki, logs, data):
        shutil.rmtree(d, ignore_errors=True)
    logs.mkdir(parents=True)
    make_pki(pki)
    (STATE_DIR / "audit-policy.yaml").write_text(AUDIT_POLICY)
    ports = {n: free_port() for n in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok")}
    write_kubeconfig(pki, ports["apiserver"])
    pids: dict[str, int] = {}
    state = {"pids": pids, "ports": ports, "bin": str(bin_dir)}

    def save() -> None:
        STATE_FILE.write_text(json.dumps(state, indent=2))

    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    pids["etcd"] = start(
        "etcd",
        [
            str(bin_dir / "etcd"),
            "--data-dir",
            str(data),
            "--name",
            "braid",
            "--listen-client-urls",
            etcd_url,
            "--advertise-client-urls",
            etcd_url,
            "--listen-peer-urls",
            f"http://127.0.0.1:{ports['etcd-peer']}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{ports['etcd-peer']}",
            "--initial-cluster",
            f"braid=http://127.0.0.1:{ports['etcd-peer']}",
            "--unsafe-no-fsync=true",  # throw-away data: trade durability for test speed
            "--log-level",
            "warn",
        ],
        logs,
    )
    save()
    wait_for("etcd", lambda: http_ok(f"{etcd_url}/health"), 30, pids)

    pids["kube-apiserver"] = start(
        "kube-apiserver",
        [
            str(bin_dir / "kube-apiserver"),
            "--etcd-servers",
            etcd_url,
            "--bind-address",
            "127.0.0.1",
            "--advertise-address",
            "127.0.0.1",
            "--secure-port",
            str(ports["apiserver"]),
            "--tls-cert-file",
            str(pki / "apiserver.crt"),
            "--tls-private-key-file",
            str(pki / "apiserver.key"),
            "--client-ca-file",
            str(pki / "ca.crt"),
            "--service-account-issuer",
            "https://kubernetes.default.svc",
            "--service-account-key-file",
            str(pki / "sa.pub"),
            "--service-account-signing-key-file",
            str(pki / "sa.key"),
            "--service-cluster-ip-range",
            "10.0.0.0/24",
            "--authorization-mode",
            "Node,RBAC",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            # New nodes get a not-ready taint that only the node-lifecycle controller removes,
            # and that controller is off (fake nodes send no heartbeats).
            "--disable-admission-plugins=TaintNodesByCondition",
            "--audit-policy-file",
            str(STATE_DIR / "audit-policy.yaml"),
            "--audit-log-path",
            str(logs / "audit.log"),
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--audit-log-maxsize=200",
            "--v",
            "1",
        ],
        logs,
    )
    save()
    wait_for(
        "kube-apiserver",
        lambda: https_ok(f"https://127.0.0.1:{ports['apiserver']}/readyz", pki),
        90,
        pids,
    )

    pids["kube-controller-manager"] = start(
        "kube-controller-manager",
        [
            str(bin_dir / "kube-controller-manager"),
            "--kubeconfig",
            str(KUBECONFIG),
            "--authentication-kubeconfig",
            str(KUBECONFIG),
            "--authorization-kubeconfig",
            str(KUBECONFIG),
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            str(ports["kcm"]),
            "--service-account-private-key-file",
            str(pki / "sa.key"),
            "--root-ca-file",
            str(pki / "ca.crt"),
            "--cluster-signing-cert-file",
            str(pki / "ca.crt"),
            "--cluster-signing-key-file",
            str(pki / "ca.key"),
            "--use-service-account-credentials=true",
            # Fake nodes send no heartbeats; without this the lifecycle controller taints them.
            "--controllers",
            "*,-node-lifecycle-controller",
            "--leader-elect=false",
            "--v",
            "1",
        ],
        logs,
    )
    pids["kube-scheduler"] = start(
        "kube-scheduler",
        [
            str(bin_dir / "kube-scheduler"),
            "--kubeconfig",
            str(KUBECONFIG),
            "--authentication-kubeconfig",
            str(KUBECONFIG),
            "--authorization-kubeconfig",
            str(KUBECONFIG),
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            str(ports["scheduler"]),
            "--leader-elect=false",
            "--v",
            "1",
        ],
        logs,
    )
    pids["kwok"] = start(
        "kwok",
        [
            str(bin_dir / "kwok"),
            "--kubeconfig",
            str(KUBECONFIG),
            "--manage-all-nodes=true",
            "--config",
            str(HERE / "stages.yaml"),
            "--server-address",
            f"127.0.0.1:{ports['kwok']}",
            "--node-ip",
            "10.1.0.1",
            "--cidr",
            "10.2.0.1/16",
        ],
        logs,
    )
    save()
    nodes = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": f"kwok-node-{i}",
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                        "labels": {
                            "type": "kwok",
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/hostname": f"kwok-node-{i}",
                        },
                    },
                }
                for i in range(NODES)
            ],
        }
    )
    kubectl("apply", "-f", "-", stdin=nodes)

    def ready() -> bool:
        try:
            out = kubectl(
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}",
            )
            kubectl("get", "serviceaccount", "default", "-n", "default")
        except subprocess.CalledProcessError:
            return False
        return out.split() == ["True"] * NODES

    wait_for("fake nodes Ready and the default ServiceAccount", ready, 90, pids)
    state["started_in_seconds"] = round(time.monotonic() - began, 1)
    save()
    log(f"up in {state['started_in_seconds']}s: export KUBECONFIG={KUBECONFIG}")
    print(KUBECONFIG)


def down() -> None:
    state = load_state()
    pids = state.get("pids", {})
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(p) for p in pids.values()):
        time.sleep(0.2)
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    shutil.rmtree(STATE_DIR / "etcd", ignore_errors=True)
    STATE_FILE.unlink(missing_ok=True)
    if pids:
        log("down: stopped " + ", ".join(pids))


def restart(names: list[str]) -> None:
    """Kill components (SIGKILL, like a crash) and start them again with the same arguments
    and data: the fault tests restart etcd and the API server under running workflows."""
    state = load_state()
    if not state:
        raise SystemExit("the cluster is not up")
    pids: dict[str, int] = state["pids"]
    for name in names:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pids[name], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and alive(pids[name]):
            time.sleep(0.1)
    started: dict[str, int] = {}
    for name in names:
        argv = json.loads((STATE_DIR / f"{name}.argv.json").read_text())
        pids[name] = started[name] = start(name, argv, STATE_DIR / "logs")
        STATE_FILE.write_text(json.dumps(state, indent=2))
        if name == "etcd":
            url = f"http://127.0.0.1:{state['ports']['etcd']}/health"
            wait_for("etcd", lambda url=url: http_ok(url), 30, started)
    api = f"https://127.0.0.1:{state['ports']['apiserver']}/readyz"
    wait_for("kube-apiserver", lambda: https_ok(api, STATE_DIR / "pki"), 90, started)
    log(f"restarted {', '.join(names)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "build", "restart"])
    parser.add_argument("components", nargs="*", help="restart: etcd, kube-apiserver, ...")
    args = parser.parse_args()
    if args.command == "restart":
        restart(args.components)
    elif args.command == "up":
        up()
    elif args.command == "down":
        down()
    elif args.command == "build":
        print(build())
    else:
        state = load_state()
        print("running" if healthy(state) else "not running")
        sys.exit(0 if healthy(state) else 1)


if __name__ == "__main__":
    main()
