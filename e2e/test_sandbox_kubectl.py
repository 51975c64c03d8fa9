"""The sandbox API server, driven by the real ``kubectl`` (1.32) through the kubeconfig it writes.

Every kubectl runs with a bounded timeout; long-running ones (``get -w``, ``wait``, ``logs -f``)
are read with a deadline and always killed and reaped.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from e2e.cluster import sandbox_only
from e2e.sandbox.api.testing import FakePods, ServerThread

pytestmark = [
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
    sandbox_only("tests the sandbox itself, not kubectl-relay"),
]

SCALE = float(os.environ.get("RELAY_TEST_TIMEOUT_SCALE", "1"))
TIMEOUT = 20 * SCALE

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: socattunnels.relay.example.io
spec:
  group: relay.example.io
  scope: Namespaced
  names: {plural: socattunnels, singular: socattunnel, kind: SocatTunnel, shortNames: [st]}
  versions:
    - name: v1alpha1
      served: true
      storage: true
      subresources: {status: {}}
      additionalPrinterColumns:
        - {name: Listen, type: string, jsonPath: .spec.listen}
        - {name: Replicas, type: integer, jsonPath: .spec.replicas}
        - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
        - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [listen]
              properties:
                listen: {type: string, minLength: 1}
                replicas: {type: integer, minimum: 0, default: 1}
            status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


def tunnel(name: str, listen: str = "TCP-LISTEN:8080", extra: str = "") -> str:
    return (f"apiVersion: relay.example.io/v1alpha1\nkind: SocatTunnel\nmetadata:\n"
            f"  name: {name}\nspec:\n  listen: {listen}\n{extra}")


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def pods() -> FakePods:
    return FakePods()


@pytest.fixture
def sandbox(pods: FakePods) -> Iterator[ServerThread]:
    with ServerThread(backend=pods) as running:
        yield running


@pytest.fixture
def env(sandbox: ServerThread, tmp_path: Path) -> dict[str, str]:
    """kubectl's environment: the sandbox's kubeconfig, a private HOME (discovery cache)."""
    kubeconfig = tmp_path / "kubeconfig"
    sandbox.server.write_kubeconfig(kubeconfig)
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home)}


@pytest.fixture
def kubectl(env: dict[str, str], tmp_path: Path) -> Kubectl:
    """Run kubectl; ``stdin`` text is passed as a file (``-f -``)."""
    def run(*args: str, stdin: str | None = None, check: bool = True,
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["kubectl", *args], input=stdin, capture_output=True,
                                text=True, env=env, timeout=TIMEOUT, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result
    return run


class Background:
    """A long-running kubectl whose output is read with deadlines; killed on exit."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(["kubectl", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.output = b""

    def read_until(self, text: str, timeout: float = TIMEOUT) -> str:
        """Read stdout until ``text`` appears; return everything read so far."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while text.encode() not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} in {self.output.decode()!r}")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"EOF before {text!r} in {self.output.decode()!r}")
                self.output += chunk
        return self.output.decode()

    def finish(self, timeout: float = TIMEOUT) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (self.output + out).decode(), err.decode()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def with_crd(kubectl: Kubectl) -> None:
    assert "created" in kubectl("apply", "-f", "-", stdin=CRD).stdout
    kubectl("wait", "--for=condition=Established", "crd/socattunnels.relay.example.io",
            "--timeout=10s")


def columns(line: str) -> list[str]:
    return line.split()


def test_apply_get_columns_and_yaml(kubectl: Kubectl, with_crd: None) -> None:
    assert kubectl("apply", "-f", "-", stdin=tunnel("web")).stdout.strip() == (
        "socattunnel.relay.example.io/web created")
    assert kubectl("apply", "-f", "-", stdin=tunnel("web")).stdout.strip() == (
        "socattunnel.relay.example.io/web unchanged")
    assert kubectl("apply", "-f", "-", stdin=tunnel("web", "TCP-LISTEN:9090")).stdout.strip() == (
        "socattunnel.relay.example.io/web configured")
    header, row = kubectl("get", "st").stdout.splitlines()
    assert columns(header) == ["NAME", "LISTEN", "REPLICAS", "READY", "AGE"]
    assert columns(row)[:3] == ["web", "TCP-LISTEN:9090", "1"]
    obj = yaml.safe_load(kubectl("get", "socattunnels", "web", "-o", "yaml").stdout)
    assert obj["spec"] == {"listen": "TCP-LISTEN:9090", "replicas": 1}
    assert obj["metadata"]["generation"] == 2 and obj["metadata"]["uid"]
    names = kubectl("get", "st", "-o", "jsonpath={.items[*].metadata.name}").stdout
    assert names == "web"
    resources = kubectl("api-resources", "--api-group=relay.example.io").stdout.splitlines()
    assert columns(resources[1]) == ["socattunnels", "st", "relay.example.io/v1alpha1", "true",
                                     "SocatTunnel"]


def test_invalid_objects_and_unknown_fields_are_refused(kubectl: Kubectl, with_crd: None) -> None:
    bad = kubectl("apply", "-f", "-", stdin=tunnel("bad", extra="  replicas: -1\n"), check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        'The SocatTunnel "bad" is invalid: spec.replicas: Invalid value: -1: spec.replicas in '
        "body should be greater than or equal to 0")
    unknown = tunnel("unk", extra="  bogus: 1\n")
    strict = kubectl("create", "-f", "-", stdin=unknown, check=False)
    assert strict.returncode == 1
    assert strict.stderr.strip() == (
        'Error from server (BadRequest): error when creating "STDIN": SocatTunnel in version '
        '"v1alpha1" cannot be handled as a SocatTunnel: strict decoding error: unknown field '
        '"spec.bogus"')
    warned = kubectl("create", "--validate=warn", "-f", "-", stdin=unknown)
    assert 'Warning: unknown field "spec.bogus"' in warned.stderr
    assert kubectl("get", "st", "unk", "-o", "jsonpath={.spec}").stdout == (
        '{"listen":"TCP-LISTEN:8080","replicas":1}')


def test_get_watch_prints_changes(kubectl: Kubectl, env: dict[str, str], with_crd: None) -> None:
    kubectl("apply", "-f", "-", stdin=tunnel("w1"))
    with Background(env, "get", "st", "-w") as watch:
        watch.read_until("w1")
        kubectl("patch", "st", "w1", "--type=merge", "-p", '{"spec":{"replicas":3}}')
        kubectl("apply", "-f", "-", stdin=tunnel("w2"))
        text = watch.read_until("w2")
    rows = [columns(line)[:3] for line in text.splitlines()[1:]]
    assert rows == [["w1", "TCP-LISTEN:8080", "1"], ["w1", "TCP-LISTEN:8080", "3"],
                    ["w2", "TCP-LISTEN:8080", "1"]]


def test_wait_for_condition_and_for_delete(kubectl: Kubectl, env: dict[str, str],
                                           with_crd: None) -> None:
    kubectl("apply", "-f", "-", stdin=tunnel("t", extra="") .replace(
        "metadata:\n", "metadata:\n  finalizers: [example.com/hold]\n"))
    with Background(env, "wait", "--for=condition=Ready", "st/t", "--timeout=15s") as ready:
        time.sleep(0.5)
        assert ready.proc.poll() is None
        kubectl("patch", "st", "t", "--subresource=status", "--type=merge", "-p",
                '{"status":{"conditions":[{"type":"Ready","status":"True"}]}}')
        code, out, err = ready.finish()
    assert (code, out.strip()) == (0, "socattunnel.relay.example.io/t condition met"), err
    assert columns(kubectl("get", "st", "t").stdout.splitlines()[1])[3] == "True"

    with Background(env, "wait", "--for=delete", "st/t", "--timeout=15s") as gone:
        deleted = kubectl("delete", "st", "t", "--wait=false")
        assert deleted.stdout.strip() == 'socattunnel.relay.example.io "t" deleted'
        time.sleep(0.5)
        assert gone.proc.poll() is None  # held by its finalizer
        kubectl("patch", "st", "t", "--type=json", "-p",
                '[{"op":"remove","path":"/metadata/finalizers"}]')
        code, out, err = gone.finish()
    assert (code, out.strip()) == (0, "socattunnel.relay.example.io/t condition met"), err
    missing = kubectl("get", "st", "t", check=False)
    assert missing.stderr.strip() == (
        'Error from server (NotFound): socattunnels.relay.example.io "t" not found')


def test_deployment_apply_uses_strategic_merge(kubectl: Kubectl) -> None:
    deployment = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - {name: web, image: nginx, ports: [{containerPort: 80}], env: [{name: A, value: "1"}]}
        - {name: side, image: busybox}
"""
    kubectl("apply", "-f", "-", stdin=deployment)
    kubectl("apply", "-f", "-", stdin=deployment.replace('value: "1"', 'value: "2"'))
    obj = yaml.safe_load(kubectl("get", "deploy", "web", "-o", "yaml").stdout)
    web, side = obj["spec"]["template"]["spec"]["containers"]
    assert (web["env"], side["name"]) == ([{"name": "A", "value": "2"}], "side")
    assert obj["metadata"]["generation"] == 2
    assert kubectl("scale", "deploy", "web", "--replicas=3").stdout.strip() == (
        "deployment.apps/web scaled")
    header, row = kubectl("get", "deploy").stdout.splitlines()
    assert columns(header) == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert columns(row)[:2] == ["web", "0/3"]
    assert kubectl("delete", "deploy", "web").stdout.strip() == 'deployment.apps "web" deleted'


def test_logs_follow(kubectl: Kubectl, env: dict[str, str], sandbox: ServerThread,
                     pods: FakePods) -> None:
    kubectl("run", "web", "--image=busybox", "--restart=Never")
    kubectl("patch", "pod", "web", "--subresource=status", "--type=merge", "-p",
            '{"status":{"phase":"Running"}}')
    sandbox.call(pods.emit, "default", "web", b"hello\n")
    with Background(env, "logs", "-f", "web") as logs:
        logs.read_until("hello\n")
        sandbox.call(pods.emit, "default", "web", b"world\n")
        logs.read_until("world\n")
        sandbox.call(pods.finish, "default", "web")
        code, out, err = logs.finish()
    assert (code, out) == (0, "hello\nworld\n"), err


def test_forbidden_over_tls(pods: FakePods, tmp_path: Path) -> None:
    """Over HTTPS kubectl sends the user's token (client-go never does over plain HTTP)."""
    with ServerThread(backend=pods, tls=True) as running:
        running.server.add_user("alice", namespaces={"team"})
        env = {**os.environ, "HOME": str(tmp_path)}
        for user in ("admin", "alice"):
            running.server.write_kubeconfig(tmp_path / user, user=user)

        def run(user: str, *args: str, stdin: str | None = None,
                ) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["kubectl", "--kubeconfig", str(tmp_path / user), *args],
                                  input=stdin, capture_output=True, text=True, env=env,
                                  timeout=TIMEOUT, check=False)

        namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n"
        assert run("admin", "apply", "-f", "-", stdin=namespace).returncode == 0
        refused = run("alice", "get", "pods", "-n", "default")
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            'Error from server (Forbidden): pods is forbidden: User "alice" cannot list '
            'resource "pods" in API group "" in the namespace "default"')
        allowed = run("alice", "get", "pods", "-n", "team")
        assert (allowed.returncode, allowed.stderr.strip()) == (
            0, "No resources found in team namespace.")
        impersonated = run("admin", "get", "pods", "-n", "default", "--as=alice")
        assert "Forbidden" in impersonated.stderr


def test_imperative_create_commands(kubectl: Kubectl) -> None:
    """``kubectl create <generator>`` sends protobuf bodies; the sandbox decodes them."""
    kubectl("create", "namespace", "team")
    kubectl("create", "configmap", "cfg", "-n", "team", "--from-literal=a=b")
    kubectl("create", "secret", "generic", "pw", "--from-literal=p=s3cret")
    kubectl("create", "deployment", "web", "--image=nginx", "--replicas=0", "--port=8080")
    kubectl("create", "service", "clusterip", "web", "--tcp=80:8080")
    kubectl("create", "job", "once", "--image=busybox", "--", "echo", "hi")
    assert kubectl("get", "ns", "team", "-o", "jsonpath={.status.phase}").stdout == "Active"
    assert kubectl("get", "cm", "cfg", "-n", "team", "-o", "jsonpath={.data}").stdout == (
        '{"a":"b"}')
    assert kubectl("get", "secret", "pw", "-o", "jsonpath={.data.p}").stdout == "czNjcmV0"
    deployment = yaml.safe_load(kubectl("get", "deploy", "web", "-o", "yaml").stdout)
    assert deployment["spec"]["replicas"] == 0
    assert deployment["spec"]["template"]["spec"]["containers"][0]["ports"] == [
        {"containerPort": 8080, "protocol": "TCP"}]
    service = yaml.safe_load(kubectl("get", "svc", "web", "-o", "yaml").stdout)
    assert service["spec"]["ports"] == [{"name": "80-8080", "port": 80, "protocol": "TCP",
                                         "targetPort": 8080}]
    job = yaml.safe_load(kubectl("get", "job", "once", "-o", "yaml").stdout)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["echo", "hi"]
