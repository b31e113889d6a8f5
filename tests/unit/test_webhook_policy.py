"""Where webhook steps may send requests from the operator, and how a shard picks its runs."""

from __future__ import annotations

import asyncio
import http.server
import ipaddress
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from braid.engine import StartAttempt
from braid.engine.actions import AttemptLabels, WebhookRequest
from braid.kube.selectors import parse_selector, selector_keys
from braid.webhook import MAX_RESPONSE_BYTES, WebhookPolicy, WebhookRefusedError, call_webhook
from tests.loopback import serve


def check(policy: WebhookPolicy, url: str) -> str | None:
    try:
        asyncio.run(policy.resolve(httpx.URL(url)))
    except WebhookRefusedError as exc:
        return str(exc)
    except httpx.InvalidURL as exc:  # the call never happens: call_webhook reports this
        return str(exc)
    return None


# Every form an attacker may write an address in, and whether the default policy lets a
# webhook reach it. IPv6 forms that carry an IPv4 address are judged by that address.
ADDRESSES = [
    # loopback, written every way
    ("http://127.0.0.1/", False),
    ("http://127.1/", False),
    ("http://127.0.0.1.nip.invalid/", None),  # a name that does not resolve: refused too
    ("http://2130706433/", False),
    ("http://0x7f000001/", False),
    ("http://0177.0.0.1/", False),
    ("http://localhost/", False),
    ("http://[::1]/", False),
    ("http://[0:0:0:0:0:0:0:1]/", False),
    ("http://[::ffff:127.0.0.1]/", False),
    ("http://[::ffff:7f00:1]/", False),
    ("http://[0:0:0:0:0:ffff:127.0.0.1]/", False),
    ("http://[::127.0.0.1]/", False),
    ("http://[64:ff9b::127.0.0.1]/", False),
    ("http://[64:ff9b::7f00:1]/", False),
    ("http://[2002:7f00:1::]/", False),
    # "this host" and unspecified
    ("http://0.0.0.0/", False),
    ("http://0/", False),
    ("http://[::]/", False),
    ("http://[::ffff:0.0.0.0]/", False),
    # cloud metadata services
    ("http://169.254.169.254/latest/meta-data/", False),
    ("http://[::ffff:169.254.169.254]/", False),
    ("http://[64:ff9b::169.254.169.254]/", False),
    ("http://[fd00:ec2::254]/", False),
    ("http://100.100.100.200/", False),
    ("http://168.63.129.16/", False),
    ("http://[2002:a9fe:a9fe::]/", False),
    ("http://[2001:0:4136:e378:8000:63bf:5601:5601]/", False),  # Teredo client 169.254.169.254
    # private, shared and link-local networks
    ("http://10.1.2.3/", False),
    ("http://172.16.0.1/", False),
    ("http://172.31.255.255/", False),
    ("http://192.168.1.1/", False),
    ("http://100.64.0.1/", False),
    ("http://[::ffff:10.0.0.1]/", False),
    ("http://[::ffff:192.168.0.1]/", False),
    ("http://[fc00::1]/", False),
    ("http://[fd12:3456::1]/", False),
    ("http://[fe80::1]/", False),
    ("http://[fec0::1]/", False),
    ("http://224.0.0.1/", False),
    ("http://255.255.255.255/", False),
    ("http://240.0.0.1/", False),
    ("http://198.18.0.1/", False),
    ("http://[ff02::1]/", False),
    # the public internet
    ("https://93.184.216.34/", True),
    ("http://8.8.8.8:53/", True),
    ("http://[2606:4700:4700::1111]/", True),
    ("http://[::ffff:8.8.8.8]/", True),
    ("http://[64:ff9b::8.8.8.8]/", True),
    ("http://172.32.0.1/", True),
    # not http at all
    ("file:///etc/passwd", False),
    ("gopher://93.184.216.34/", False),
]


@pytest.mark.parametrize(("url", "allowed"), ADDRESSES)
def test_the_default_policy_on_every_form_of_an_address(url, allowed):
    refused = check(WebhookPolicy(), url)
    if allowed:
        assert refused is None, refused
    else:
        assert refused is not None, f"{url} was allowed"


def test_there_are_at_least_forty_address_forms():
    assert len(ADDRESSES) >= 40


def test_default_deny_says_which_network():
    policy = WebhookPolicy()
    assert "169.254.0.0/16" in check(policy, "http://169.254.169.254/latest/meta-data/")
    assert "127.0.0.0/8" in check(policy, "http://[::ffff:127.0.0.1]:8080/metrics")
    assert "fc00::/7" in check(policy, "http://[fd00:ec2::254]/")


def test_host_names_are_resolved_and_every_address_must_pass():
    assert "127.0.0.0/8" in check(WebhookPolicy(), "http://localhost:9/")


def test_an_allow_list_is_exclusive_and_wins_over_deny():
    policy = WebhookPolicy.parse(["127.0.0.1", "10.0.0.0/8", "api.example.com"])
    assert check(policy, "http://127.0.0.1:1/") is None
    assert check(policy, "http://[::ffff:127.0.0.1]:1/") is None  # the same host
    assert check(policy, "http://10.9.9.9/") is None
    assert "not in the operator's webhook allow list" in check(policy, "http://192.168.1.1/")
    assert "not in the operator's webhook allow list" in check(policy, "http://8.8.8.8/")


def test_the_operators_own_ports_are_refused_whatever_is_allowed():
    policy = WebhookPolicy.parse(["127.0.0.0/8", "::1"], own_ports=[8080, 8081])
    assert "operator's own" in check(policy, "http://127.0.0.1:8080/metrics")
    assert "operator's own" in check(policy, "http://[::ffff:127.0.0.1]:8081/healthz")
    assert "operator's own" in check(policy, "http://localhost:8080/")
    assert check(policy, "http://127.0.0.1:9000/") is None


def test_deny_can_be_replaced_or_emptied():
    policy = WebhookPolicy.parse([], ["10.0.0.0/8"])
    assert "10.0.0.0/8" in check(policy, "http://10.0.0.1/")
    assert check(policy, "http://127.0.0.1/") is None
    assert WebhookPolicy.parse([], []).deny_networks == ()
    assert ipaddress.ip_network("169.254.0.0/16") in WebhookPolicy.parse([]).deny_networks


def test_non_http_urls_are_refused():
    assert "is not an http(s) URL" in check(WebhookPolicy(), "file:///etc/passwd")
    assert "is not an http(s) URL" in check(WebhookPolicy(), "gopher://x/")


class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/big":
            body = b"x" * (MAX_RESPONSE_BYTES + 10)
            kind = "text/plain"
        elif self.path == "/deep":
            body = b"[" * 300 + b"]" * 300
            kind = "application/json"
        else:
            body = json.dumps({"host": self.headers["Host"]}).encode()
            kind = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[int]:
    with serve(Echo) as url:
        yield int(url.rsplit(":", 1)[1])


def call(url: str, policy: WebhookPolicy | None) -> Any:
    request = StartAttempt(
        "r-hook-1", AttemptLabels("hook", 1), 5, webhook=WebhookRequest("GET", url, {}, None)
    )

    async def go() -> Any:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            return await call_webhook(client, request, policy)

    return asyncio.run(go())


def test_the_call_connects_to_the_address_that_was_checked(echo, monkeypatch):
    """A host name is resolved once; a second answer (DNS rebinding) is never asked for."""
    answers = iter([[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", echo))]])

    async def getaddrinfo(self: Any, host: str, *args: Any, **kwargs: Any) -> Any:
        assert host == "rebind.invalid"
        return next(answers)  # a second lookup would raise StopIteration

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)
    policy = WebhookPolicy.parse(["127.0.0.1"])
    result = call(f"http://rebind.invalid:{echo}/", policy)
    assert result.error is None, result.error
    assert result.response.body == {"host": f"rebind.invalid:{echo}"}


def test_a_response_over_the_size_cap_fails_the_attempt(echo):
    result = call(f"http://127.0.0.1:{echo}/big", WebhookPolicy.parse(["127.0.0.1"]))
    assert "larger than" in result.error


def test_a_deeply_nested_json_response_fails_the_attempt(echo):
    result = call(f"http://127.0.0.1:{echo}/deep", None)
    assert "nested deeper than 64 levels" in result.error


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:99999/",
        "http://[::1/",
        "http://exa mple.com/",
        "http:///nohost",
        "ht!tp://x/",
        "http://" + "a" * 300 + ".com/",
        "",
    ],
)
def test_a_bad_url_is_a_failed_attempt_not_an_exception(url):
    for policy in (None, WebhookPolicy()):
        result = call(url, policy)
        assert result.error, (url, result)


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
