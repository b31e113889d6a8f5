"""Where webhook steps may send requests from the operator, and how a shard picks its runs."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from braid.engine import StartAttempt
from braid.engine.actions import AttemptLabels, WebhookRequest
from braid.kube.selectors import parse_selector, selector_keys
from braid.webhook import WebhookPolicy, WebhookRefusedError, call_webhook


def check(policy: WebhookPolicy, url: str) -> str | None:
    try:
        asyncio.run(policy.check(url))
    except WebhookRefusedError as exc:
        return str(exc)
    return None


def test_default_denies_metadata_loopback_and_link_local():
    policy = WebhookPolicy()
    assert "169.254.0.0/16" in check(policy, "http://169.254.169.254/latest/meta-data/")
    assert "127.0.0.0/8" in check(policy, "http://127.0.0.1:8080/metrics")
    assert "::1/128" in check(policy, "http://[::1]/")
    assert check(policy, "https://10.1.2.3/api") is None
    assert check(policy, "https://93.184.216.34/") is None


def test_host_names_are_resolved_and_every_address_must_pass():
    assert "127.0.0.0/8" in check(WebhookPolicy(), "http://localhost:9/")


def test_an_allow_list_is_exclusive_and_wins_over_deny():
    policy = WebhookPolicy.parse(["127.0.0.1", "10.0.0.0/8", "api.example.com"])
    assert check(policy, "http://127.0.0.1:1/") is None
    assert check(policy, "http://10.9.9.9/") is None
    assert check(policy, "https://api.example.com/v1") is None  # by name, not resolved
    assert "not in the operator's webhook allow list" in check(policy, "http://192.168.1.1/")


def test_deny_can_be_replaced_or_emptied():
    policy = WebhookPolicy.parse([], ["10.0.0.0/8"])
    assert "10.0.0.0/8" in check(policy, "http://10.0.0.1/")
    assert check(policy, "http://127.0.0.1/") is None
    assert WebhookPolicy.parse([], []).deny_networks == ()
    assert ipaddress.ip_network("169.254.0.0/16") in WebhookPolicy.parse([]).deny_networks


def test_non_http_urls_are_refused():
    assert "is not an http(s) URL" in check(WebhookPolicy(), "file:///etc/passwd")
    assert "is not an http(s) URL" in check(WebhookPolicy(), "gopher://x/")


@pytest.mark.parametrize(
    ("allow", "deny", "message"),
    [
        (["10.0.0.0/33"], None, "--webhook-allow '10.0.0.0/33'"),
        ([], ["example.com"], "--webhook-deny 'example.com'"),
    ],
)
def test_bad_policy_entries_are_named(allow, deny, message):
    with pytest.raises(ValueError, match=message):
        WebhookPolicy.parse(allow, deny)


def test_a_refused_call_is_a_failed_attempt_that_says_why():
    request = StartAttempt(
        "r-hook-1",
        AttemptLabels("hook", 1),
        5,
        webhook=WebhookRequest("GET", "http://169.254.169.254/", {}, None),
    )
    result = asyncio.run(call_webhook(None, request, WebhookPolicy()))  # type: ignore[arg-type]
    assert result.error.startswith("GET http://169.254.169.254/ refused: 169.254.169.254")


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("shard=a", {"shard": "a"}, True),
        ("shard=a", {"shard": "b"}, False),
        ("shard==a,team", {"shard": "a", "team": "x"}, True),
        ("shard!=a", {}, True),
        ("!canary", {"canary": "1"}, False),
        ("", {"any": "thing"}, True),
    ],
)
def test_shard_selectors_match_labels(selector, labels, expected):
    assert parse_selector(selector)(labels) is expected


def test_a_bad_selector_names_the_term():
    with pytest.raises(ValueError, match="cannot read 'shard in \\(a\\)'"):
        parse_selector("team=x,shard in (a)")


def test_a_shard_reads_the_keys_of_its_selector():
    assert selector_keys("shard=a,!canary,team!=x") == {"shard", "canary", "team"}
    assert selector_keys("") == frozenset()
