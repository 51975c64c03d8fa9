"""The API server's ``apiserver_request_total``, read before and after, by verb and resource.

The counter has no label for the client, so the difference is every
client's: the operator's, but also the benchmark's own creates and watches,
the controller manager's (ReplicaSets, Pods, Deployment status), the
scheduler's and kwok's (pod bindings and status), the garbage collector's
(it GETs the owner of a new child, a SocatTunnel, until its own watch of a
newly created CRD starts). ``OPERATOR_ROWS`` marks the rows that only the
operator sends.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping

#: One sample of the counter: its labels and its value.
_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

#: (verb, resource, subresource) that only the operator sends in the benchmark.
OPERATOR_ROWS = frozenset({
    ("PATCH", "socattunnels", ""),
    ("PATCH", "socattunnels", "status"),
    ("POST", "deployments", ""),
    ("GET", "deployments", ""),
    ("POST", "services", ""),
    ("GET", "services", ""),
    ("POST", "networkpolicies", ""),
    ("GET", "networkpolicies", ""),
})

Key = tuple[str, str, str]


def parse(text: str) -> Counter[Key]:
    """Requests by (verb, resource, subresource), summed over codes, scopes and components."""
    totals: Counter[Key] = Counter()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        totals[key] += int(float(match["value"]))
    return totals


def difference(before: Mapping[Key, int], after: Mapping[Key, int]) -> Counter[Key]:
    """What was added between the two reads (rows that did not change are left out)."""
    return Counter({key: after[key] - before.get(key, 0)
                    for key in after if after[key] > before.get(key, 0)})
