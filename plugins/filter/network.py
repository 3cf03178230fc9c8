"""Filters that check the lab's network settings before anything is installed."""

from __future__ import annotations

import ipaddress

from ansible.errors import AnsibleFilterError


def _parse_range(spec):
    """Return (first, last) addresses of "a.b.c.d-e.f.g.h", "a.b.c.d/nn" or a single address."""
    text = str(spec).strip()
    if not text:
        raise ValueError("the range is empty")
    if "-" in text:
        first_text, last_text = (part.strip() for part in text.split("-", 1))
        first = ipaddress.ip_address(first_text)
        last = ipaddress.ip_address(last_text)
        if first.version != last.version:
            raise ValueError("%s and %s are not of the same IP version" % (first, last))
        if int(last) < int(first):
            raise ValueError("the range ends (%s) before it starts (%s)" % (last, first))
        return first, last
    network = ipaddress.ip_network(text, strict=False)
    return network.network_address, network.broadcast_address


def ip_range_report(spec, addresses=None):
    """Describe an address range and which of ``addresses`` fall inside it.

    Returns a dict with ``valid``, ``error`` (why it does not parse), ``first``, ``last``,
    ``size`` and ``overlaps`` (the given addresses inside the range, in the order given), so a
    task can assert on it and print a message that names the field and the fix.
    """
    try:
        first, last = _parse_range(spec)
    except ValueError as exc:
        return {"valid": False, "error": str(exc), "first": None, "last": None, "size": 0, "overlaps": []}
    overlaps = []
    for address in addresses or []:
        if address in (None, ""):
            continue
        try:
            candidate = ipaddress.ip_address(str(address).strip())
        except ValueError:
            # Host names (not addresses) cannot overlap a range; the hosts' facts give their IPs.
            continue
        if candidate.version == first.version and int(first) <= int(candidate) <= int(last):
            overlaps.append(str(candidate))
    return {
        "valid": True,
        "error": "",
        "first": str(first),
        "last": str(last),
        "size": int(last) - int(first) + 1,
        "overlaps": overlaps,
    }


def duplicates(values):
    """Return the values that occur more than once, each once, in first-seen order."""
    if not isinstance(values, (list, tuple)):
        raise AnsibleFilterError("duplicates expects a list, got %s" % type(values).__name__)
    seen = set()
    repeated = []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    return repeated


class FilterModule:
    def filters(self):
        return {"ip_range_report": ip_range_report, "duplicates": duplicates}
