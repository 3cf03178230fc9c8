import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.ailab.platform.plugins.filter.network import duplicates, ip_range_report


@pytest.mark.parametrize(
    ("spec", "first", "last", "size"),
    [
        ("192.168.1.240-192.168.1.250", "192.168.1.240", "192.168.1.250", 11),
        (" 10.0.0.5 - 10.0.0.5 ", "10.0.0.5", "10.0.0.5", 1),
        ("10.0.0.0/30", "10.0.0.0", "10.0.0.3", 4),
        ("10.0.0.7/30", "10.0.0.4", "10.0.0.7", 4),
        ("fd00::10-fd00::1f", "fd00::10", "fd00::1f", 16),
    ],
)
def test_valid_ranges_report_their_bounds(spec, first, last, size):
    report = ip_range_report(spec)
    assert report == {"valid": True, "error": "", "first": first, "last": last, "size": size, "overlaps": []}


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("", "empty"),
        ("10.0.0.9-10.0.0.1", "ends (10.0.0.1) before it starts (10.0.0.9)"),
        ("10.0.0.1-fd00::1", "not of the same IP version"),
        ("10.0.0.300-10.0.0.301", "does not appear to be an IPv4 or IPv6 address"),
        ("lab-range", "does not appear to be an IPv4 or IPv6 address"),
        ("labrange", "does not appear to be an IPv4 or IPv6 network"),
        ("10.0.0.0/33", "10.0.0.0/33"),
    ],
)
def test_invalid_ranges_say_why(spec, reason):
    report = ip_range_report(spec)
    assert report["valid"] is False
    assert reason in report["error"]


def test_overlaps_lists_addresses_inside_the_range_only():
    report = ip_range_report(
        "192.168.1.240-192.168.1.250",
        [
            "192.168.1.10",
            "192.168.1.240",
            "node-a.lab",
            "",
            None,
            "192.168.1.250",
            "192.168.1.251",
            "fd00::1",
        ],
    )
    assert report["overlaps"] == ["192.168.1.240", "192.168.1.250"]


def test_duplicates_returns_each_repeated_value_once_in_order():
    assert duplicates(["a", "b", "a", "c", "b", "a"]) == ["a", "b"]
    assert duplicates(["a", "b"]) == []


def test_duplicates_rejects_non_lists():
    with pytest.raises(AnsibleFilterError, match="expects a list"):
        duplicates("abc")
