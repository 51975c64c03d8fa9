"""What a session says about the API server's health and about what it could not delete."""

from __future__ import annotations

from kubectl_relay.plugin import events
from kubectl_relay.plugin.errors import AccessDenied, ClusterError
from kubectl_relay.plugin.kube import unreachable
from kubectl_relay.plugin.lifecycle import ApiWatch, cleanup_error


def test_an_outage_is_told_once_and_its_end_once() -> None:
    seen: list[events.SessionEvent] = []
    watch = ApiWatch(seen.append)
    watch.answered()
    down = unreachable("https://127.0.0.1:6443", ConnectionRefusedError("refused"))
    for _ in range(600):  # ten minutes of checks, one a second
        watch.failed(down)
    for _ in range(3):
        watch.answered()
    watch.failed(ClusterError("the API server did not answer GET /x within 30s", "raise it"))
    assert [event.text for event in seen if isinstance(event, events.Notice)] == [
        "cannot reach the API server (cannot reach the API server at https://127.0.0.1:6443: "
        "refused); the tunnel keeps serving, and the relay pods are checked again when it "
        "answers",
        "the API server answers again",
        "cannot reach the API server (the API server did not answer GET /x within 30s); the "
        "tunnel keeps serving, and the relay pods are checked again when it answers",
    ]
    assert [event.warning for event in seen if isinstance(event, events.Notice)] == [
        True,
        False,
        True,
    ]


def test_a_refused_delete_names_the_verb_and_the_resource() -> None:
    refused = AccessDenied(
        403,
        "Forbidden",
        'jobs.batch "kubectl-relay-ab-0-1" is forbidden: User "bob" cannot delete resource '
        '"jobs" in API group "batch" in the namespace "dev"',
    )
    error = cleanup_error([("job/kubectl-relay-ab-0-1", "jobs.batch", refused)], "dev", "bob")
    assert error.exit_code == 3
    assert error.left == ("job/kubectl-relay-ab-0-1",)
    assert str(error) == (
        'could not delete job/kubectl-relay-ab-0-1 in namespace "dev": user "bob" has no right '
        "to delete jobs.batch; ask for rights to create, patch and delete jobs, to create "
        "pods/portforward, to read pods and pods/log and to delete pods (missing: delete "
        "jobs.batch), then run kubectl relay gc; the relay pods end by themselves within 40s"
    )
    shorter = cleanup_error([("job/j", "jobs.batch", refused)], "dev", "bob", lease=12)
    assert str(shorter).endswith("the relay pods end by themselves within 12s")


def test_another_cleanup_failure_says_what_is_left() -> None:
    down = ClusterError("cannot reach the API server at https://h:6443: reset", "check it")
    error = cleanup_error([("secret/s", "secrets", down)], "dev", "bob")
    assert str(error) == (
        'could not delete secret/s in namespace "dev" (secret/s: cannot reach the API server '
        "at https://h:6443: reset; check it); run kubectl relay gc once the cluster answers; "
        "the relay pods end by themselves within 40s"
    )
