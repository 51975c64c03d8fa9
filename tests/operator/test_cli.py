"""``relay-operator``'s flags: what they set, and how bad ones fail (exit 2, one message)."""

from __future__ import annotations

import argparse

import pytest

from relay_operator import cli
from relay_operator.settings import Settings


def settings(*argv: str, **environ: str) -> Settings:
    return cli.settings_from(cli._parser().parse_args(argv), dict(environ))


def test_defaults_come_from_the_environment() -> None:
    assert settings() == Settings()
    assert settings(RELAY_OPERATOR_NAMESPACES="a,b").namespaces == ("a", "b")
    assert settings(RELAY_OPERATOR_PEERING="relay").peering == "relay"


def test_flags_override_the_environment() -> None:
    got = settings("-n", "team-a", "-n", "team-b", "--peering", "relay",
                   "--health-port", "0", "--metrics-port", "9999",
                   RELAY_OPERATOR_NAMESPACES="other")
    assert got.namespaces == ("team-a", "team-b")
    assert (got.peering, got.health_port, got.metrics_port) == ("relay", 0, 9999)
    assert settings("-A", RELAY_OPERATOR_NAMESPACES="other").namespaces == ()
    assert settings("--standalone", RELAY_OPERATOR_PEERING="relay").peering is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-n", "a", "-A"], "argument -A/--all-namespaces: not allowed with argument -n/--namespace"),
        (["--peering", "x", "--standalone"], "argument --standalone: not allowed with argument --peering"),
        (["--metrics-port", "http"], "argument --metrics-port: expected a port from 0 to 65535, got 'http'"),
        (["-n", "Team_A"], "RELAY_OPERATOR_NAMESPACES='Team_A': \"Team_A\" is not a namespace name"),
    ],
)
def test_bad_flags_exit_2_with_one_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"relay-operator: error: {message}"


def test_unreadable_kubeconfig_exits_1(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--kubeconfig", "/nonexistent/kubeconfig", "--standalone"]) == 1
    assert "cannot load the cluster configuration" in capsys.readouterr().err


def test_parser_is_argparse() -> None:
    assert isinstance(cli._parser(), argparse.ArgumentParser)

