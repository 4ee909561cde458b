"""The environment's proxy and NO_PROXY, read as Go's httpproxy reads them: the cases of Go's own
proxy_test.go that apply (edgeagent has no CGI mode and keeps a scheme it does not know as
written), and the host:port entries that matched nothing before."""

from __future__ import annotations

import pytest

from edgeagent.http1.proxyenv import EnvironmentProxies

# Go's TestUseProxy: NO_PROXY and whether a request to host:80 goes through the proxy
GO_NO_PROXY = ("foobar.com, .barbaz.net, *.wildcard.io, 192.168.1.1, 192.168.1.2:81, 192.168.1.3:80, 10.0.0.0/30, "
               "2001:db8::52:0:1, [2001:db8::52:0:2]:443, [2001:db8::52:0:3]:80, 2002:db8:a::45/64")
GO_USE_PROXY = [
    ("localhost", False), ("127.0.0.1", False), ("127.0.0.2", False), ("[::1]", False),
    ("[::2]", True),  # not a loopback address
    ("192.168.1.1", False),  # an address
    ("192.168.1.2", True),  # its port is 81
    ("192.168.1.3", False),  # address and port
    ("192.168.1.4", True), ("10.0.0.2", False),  # in 10.0.0.0/30
    ("[2001:db8::52:0:1]", False), ("[2001:db8::52:0:2]", True),  # its port is 443
    ("[2001:db8::52:0:3]", False), ("[2002:db8:a::123]", False),  # in the /64
    ("[fe80::424b:c8be:1643:a1b6]", True),
    ("barbaz.net", True),  # .barbaz.net: the names under it only
    ("www.barbaz.net", False), ("foobar.com", False), ("www.foobar.com", False),
    ("foofoobar.com", True), ("baz.com", True), ("localhost.net", True), ("local.localhost", True),
    ("barbarbaz.net", True),
    ("wildcard.io", True),  # *.wildcard.io: the names under it only
    ("nested.wildcard.io", False), ("awildcard.io", True),
]


def _proxied(no_proxy: str, url: str) -> bool:
    environment = EnvironmentProxies({"HTTP_PROXY": "http://proxy.test:3128", "HTTPS_PROXY": "http://proxy.test:3128",
                                      "NO_PROXY": no_proxy})
    return environment.for_url(url) is not None


@pytest.mark.parametrize("host, proxied", GO_USE_PROXY)
def test_no_proxy_matches_as_gos_use_proxy_table(host, proxied):
    assert _proxied(GO_NO_PROXY, f"http://{host}:80/v1/traces") == proxied


@pytest.mark.parametrize("host, proxied", GO_USE_PROXY)
def test_a_star_in_no_proxy_keeps_every_host_from_the_proxy(host, proxied):
    assert not _proxied("*", f"http://{host}:80/")


def test_an_entry_without_a_host_is_ignored():
    assert _proxied(":1", "http://example.com/")


@pytest.mark.parametrize("no_proxy, url, proxied", [
    # Go's TestProxyForURL cases with NO_PROXY
    ("example.com", "http://example.com/", False), (".example.com", "http://example.com/", True),
    ("ample.com", "http://example.com/", True), ("example.com", "http://foo.example.com/", False),
    (".foo.com", "http://example.com/", True), (".示例.com", "http://www.示例.com", False),
    ("xn--fsq092h.com", "http://www.示例.com", False), ("示例.com", "http://www.xn--fsq092h.com", False),
    ("example.com", "http://[1000::%25.example.com]:123", True),  # a zone is no name
    # a port: that port only, the URL's or its scheme's default
    ("collector.test:4318", "http://collector.test:4318/v1/traces", False),
    ("collector.test:4318", "http://collector.test:4319/v1/traces", True),
    ("collector.test:80", "http://collector.test/v1/traces", False),
    ("collector.test:443", "https://collector.test/v1/traces", False),
    ("collector.test:80", "https://collector.test/v1/traces", True),
    (".svc:4318", "http://collector.ns.svc:4318/", False), ("*.svc:4318", "http://collector.ns.svc:9/", True),
    ("10.1.2.3:4318", "http://10.1.2.3:4318/", False), ("10.1.2.3:4318", "http://10.1.2.3:4317/", True),
    ("[fd00::1]:4318", "http://[fd00::1]:4318/", False), ("fd00::1", "http://[fd00::1]:4318/", False),
    ("::ffff:10.1.2.3", "http://10.1.2.3/", False),  # the same address, as Go's IP.Equal
    ("COLLECTOR.Test", "http://collector.test/", False), (" collector.test ,other", "http://collector.test/", False),
    ("10.0.0.0/8", "http://10.1.2.3:4318", False), ("10.0.0.0/8", "http://11.1.2.3:4318", True),
    ("10.0.0.0/8", "http://[::ffff:10.1.2.3]:4318", False), ("fd00::/8", "http://[fd00::1]:4318", False),
    ("0.1", "http://10.0.0.1/", True),  # a name never matches an address
])
def test_no_proxy_entries(no_proxy, url, proxied):
    assert _proxied(no_proxy, url) == proxied


@pytest.mark.parametrize("environ, url, proxy", [
    ({"HTTP_PROXY": "127.0.0.1:8080"}, "http://example.com", "http://127.0.0.1:8080"),
    ({"HTTP_PROXY": "cache.corp.example.com:1234"}, "http://example.com", "http://cache.corp.example.com:1234"),
    ({"HTTP_PROXY": "https://cache.corp.example.com"}, "http://example.com", "https://cache.corp.example.com"),
    ({"HTTP_PROXY": "http.proxy.tld", "HTTPS_PROXY": "secure.proxy.tld"}, "http://insecure.tld/",
     "http://http.proxy.tld"),
    ({"HTTP_PROXY": "http.proxy.tld", "HTTPS_PROXY": "secure.proxy.tld"}, "https://secure.tld/",
     "http://secure.proxy.tld"),
    ({"HTTP_PROXY": "http.proxy.tld"}, "https://secure.tld/", None),
    ({}, "http://example.com", None),
    ({"HTTP_PROXY": "http://upper:1", "http_proxy": "http://lower:1"}, "http://example.com", "http://upper:1"),
    ({"HTTP_PROXY": "", "http_proxy": "http://lower:1"}, "http://example.com", "http://lower:1"),
    ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "", "no_proxy": "example.com"}, "http://example.com", None),
])
def test_the_proxy_for_a_url_as_gos_table(environ, url, proxy):
    assert EnvironmentProxies(environ).for_url(url) == proxy
