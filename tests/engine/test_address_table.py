"""Every row of the address table: its canonical text parses back, whatever its parameters."""

from __future__ import annotations

import pytest

from kubectl_relay.engine.addresses import (
    ADDRESS_KINDS,
    HOST_PARAMS,
    Address,
    AddressKind,
    parse_address,
)

#: A value for each parameter name the table uses; hosts are IPv6 to exercise brackets.
SAMPLES = {
    "port": "8080",
    "filename": "/run/a b:c",
    "num": "3",
    "fdnum": "3",
    "command-line": "sh -c 'echo a,b'",
    "shell-command": "echo a!!b",
    "socks-port": "1080",
    "target-port": "443",
    "listen-port": "0",
    "domain": "2",
    "type": "2",
    "protocol": "17",
    "remote-address": "x0050x7f000001",
    "local-address": '"/run/sock\\0"',
    "cid": "3",
}


def sample(kind: AddressKind, count: int) -> tuple[str, ...]:
    return tuple(
        "2001:db8::1" if name in HOST_PARAMS else SAMPLES[name] for name in kind.param_names(count)
    )


@pytest.mark.parametrize("kind", ADDRESS_KINDS, ids=lambda kind: kind.keyword)
def test_canonical_text_parses_back(kind: AddressKind) -> None:
    for count in {kind.min_params, kind.max_params}:
        address = Address(kind.keyword, sample(kind, count))
        assert parse_address(str(address)) == address, str(address)
