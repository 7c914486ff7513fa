"""Which webhook URLs the service may call: a server-side request forgery (SSRF) policy.

A partner chooses the URL; the service calls it from inside our network. Without a policy, a
partner could make the service call the cloud metadata endpoint, an admin interface on loopback,
or another internal service, and read the answers through the delivery log. The policy is applied
twice, with the same functions:

* **at subscription time** (the API): :func:`check_url` on the URL, then
  :func:`resolve_and_check` on its host, and a refusal becomes a problem document carrying
  :attr:`UnsafeUrl.code`;
* **at delivery time**: :func:`check_url` again on every attempt (the settings may have changed),
  and :func:`resolve_and_check` on every connection the worker opens, by
  :class:`CheckedNetworkBackend`, because DNS answers change.

Avoiding DNS rebinding
----------------------
Checking a name and then letting the HTTP client resolve it again is not enough: a hostile DNS
server answers a public address to the check and ``127.0.0.1`` to the connection a moment later.
So the delivery code **connects only to an address that was checked**, at the moment it
connects: its HTTP client runs on :class:`CheckedNetworkBackend`, an httpcore network backend
whose ``connect_tcp(host, port)`` resolves the name, refuses the connection unless *every*
address passes the policy (:func:`resolve_and_check`), then opens the socket to a checked
address. URLs keep their host names, so

* connections are pooled per name: two partners' names sharing an address (a CDN) never share a
  connection, nor a TLS session opened with the other's SNI;
* ``Host``, TLS SNI and certificate verification use the name, as for any request;
* there is no window between the check and the connection for DNS to change its answer.

The rest of the delivery side: ``follow_redirects=False`` (a redirect would lead to an unchecked
URL; a 3xx is a failed attempt), ``trust_env=False`` (an environment proxy would resolve the name
itself), and the response body read only up to a cap.

Tests and local development deliver to receivers on loopback: ``allowed_hosts`` (a setting) holds
host names (``localhost``) and IP networks (``127.0.0.0/8``, ``::1``) exempted from the address
rules; it never exempts from the URL rules (scheme, user information).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048

# Stable codes of refusals (they become problem document codes).
INVALID_URL = "webhook_url_invalid"
SCHEME_NOT_ALLOWED = "webhook_url_scheme_not_allowed"
USERINFO_NOT_ALLOWED = "webhook_url_userinfo_not_allowed"
HOST_NOT_ALLOWED = "webhook_url_host_not_allowed"
ADDRESS_NOT_ALLOWED = "webhook_url_address_not_allowed"
HOST_UNRESOLVABLE = "webhook_url_host_unresolvable"

_PUBLIC_ONLY = "un point de réception de webhooks est sur l'internet public"

# Cloud instance metadata services: credentials live there. Named first for a clear message.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean…
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
        "168.63.129.16",  # Azure WireServer (a public address, reachable only from Azure hosts)
    )
)


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), kind) for net, kind in pairs)


# Named special-purpose ranges, most specific first, for clear messages. Whatever they miss is
# still refused by the final "not globally routable" rule (``is_global``), which follows the IANA
# special-purpose registries: the policy is "refuse unless global", the names are for people.
NAMED_NETWORKS = _nets(
    ("0.0.0.0/32", "une adresse non spécifiée"),
    ("0.0.0.0/8", "une adresse « ce réseau » (0.0.0.0/8)"),
    ("10.0.0.0/8", "une adresse privée (10.0.0.0/8)"),
    ("172.16.0.0/12", "une adresse privée (172.16.0.0/12)"),
    ("192.168.0.0/16", "une adresse privée (192.168.0.0/16)"),
    ("100.64.0.0/10", "une adresse partagée de carrier-grade NAT (100.64.0.0/10)"),
    ("127.0.0.0/8", "une adresse de bouclage, loopback (127.0.0.0/8)"),
    ("169.254.0.0/16", "une adresse link-local (169.254.0.0/16)"),
    ("192.0.0.0/24", "une adresse réservée aux protocoles de l'IETF (192.0.0.0/24)"),
    ("192.0.2.0/24", "une adresse de documentation (192.0.2.0/24)"),
    ("198.51.100.0/24", "une adresse de documentation (198.51.100.0/24)"),
    ("203.0.113.0/24", "une adresse de documentation (203.0.113.0/24)"),
    ("198.18.0.0/15", "une adresse de banc d'essai, benchmarking (198.18.0.0/15)"),
    ("192.88.99.0/24", "une adresse anycast de relais 6to4, obsolète (192.88.99.0/24)"),
    ("224.0.0.0/4", "une adresse multicast (224.0.0.0/4)"),
    ("255.255.255.255/32", "l'adresse de diffusion, broadcast"),
    ("240.0.0.0/4", "une adresse réservée (240.0.0.0/4)"),
    ("::/128", "une adresse non spécifiée"),
    ("::1/128", "une adresse de bouclage, loopback"),
    ("fe80::/10", "une adresse link-local (fe80::/10)"),
    ("fec0::/10", "une adresse site-local, obsolète (fec0::/10)"),
    ("fc00::/7", "une adresse unique-local (fc00::/7)"),
    ("ff00::/8", "une adresse multicast (ff00::/8)"),
    ("100::/64", "une adresse de rejet, discard-only (100::/64)"),
    ("64:ff9b:1::/48", "une adresse NAT64 d'usage local (64:ff9b:1::/48)"),
    ("2001::/32", "une adresse de tunnel Teredo (2001::/32)"),
    ("2001:db8::/32", "une adresse de documentation (2001:db8::/32)"),
    ("::/96", "une adresse IPv6 IPv4-compatible, obsolète (::/96)"),
)

# Translations that embed an IPv4 address: the embedded address decides.
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")

# Names that never reach the public internet (RFC 6761, RFC 6762, RFC 8375, ICANN's .internal).
_LOCAL_NAMES = ("localhost", "local", "localdomain", "internal", "home.arpa", "invalid")

_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
# A host made only of digits, dots and hex is an IPv4 address for URL parsers (WHATWG) and for
# inet_aton ("127.1", "0x7f.1", "2130706433", "0177.0.0.1"): only the dotted-quad form is allowed.
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+))*\.?")


class UnsafeUrl(ValueError):
    """A webhook URL the policy refuses; ``code`` is stable, ``message`` is for the partner."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ParsedUrl:
    """A checked webhook URL, normalised.

    ``host`` is lower-case ASCII (IDNA), without brackets or trailing dot; ``port`` is explicit;
    ``target`` is the path and query sent in the request line (``/`` when empty).
    """

    scheme: str
    host: str
    port: int
    target: str
    ip: IPAddress | None  # the host when it is an IP literal

    @property
    def default_port(self) -> bool:
        return self.port == (443 if self.scheme == "https" else 80)

    @property
    def host_header(self) -> str:
        """The ``Host`` header: the name (bracketed when IPv6), with the port when not default."""
        host = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        return host if self.default_port else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The normalised URL, as stored."""
        return f"{self.scheme}://{self.host_header}{self.target}"


# --- addresses ---------------------------------------------------------------------------------


def _embedded_ipv4(ip: IPAddress) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address stands for, and how, if it embeds one."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "la forme IPv6 IPv4-mapped"
    if ip in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "la forme NAT64 (64:ff9b::/96)"
    if ip.sixtofour is not None:
        return ip.sixtofour, "la forme 6to4 (2002::/16)"
    return None


def address_problem(address: str | IPAddress) -> str | None:
    """Why an address is not a public internet address (a noun phrase), or None when it is.

    The rule is "refuse unless globally routable", plus the cloud metadata addresses, multicast
    (which ``is_global`` lets through) and IPv6 forms embedding an IPv4 address, judged by the
    IPv4 address they carry.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return "une adresse à portée limitée (avec un index de zone)"
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        inner, form = embedded
        problem = address_problem(inner)
        return f"{form} de {inner}, {problem}" if problem else None
    if ip in METADATA_ADDRESSES:
        return "l'adresse d'un service de métadonnées cloud"
    for network, kind in NAMED_NETWORKS:
        if ip.version == network.version and ip in network:
            return kind
    for flag, kind in (
        (ip.is_unspecified, "une adresse non spécifiée"),
        (ip.is_loopback, "une adresse de bouclage, loopback"),
        (ip.is_link_local, "une adresse link-local"),
        (ip.is_multicast, "une adresse multicast"),
        (ip.is_private, "une adresse privée"),
        (ip.is_reserved, "une adresse réservée"),
        (not ip.is_global, "une adresse à usage spécial (non routable sur l'internet)"),
    ):
        if flag:
            return kind
    return None


def _show(ip: IPAddress) -> str:
    """The address as people write it (``::ffff:10.0.0.1``, not ``::ffff:a00:1``)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)


def _refusal(ip: IPAddress, problem: str, *, host: str | None = None) -> UnsafeUrl:
    where = f"{host} se résout en {_show(ip)}," if host else f"{_show(ip)} est"
    return UnsafeUrl(ADDRESS_NOT_ALLOWED, f"{where} {problem} : {_PUBLIC_ONLY}.")


# --- the allow-list ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _AllowList:
    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    def allows_name(self, host: str) -> bool:
        return host in self.names

    def allows_address(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)


@lru_cache(maxsize=16)
def _allow_list(allowed_hosts: frozenset[str]) -> _AllowList:
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in allowed_hosts:
        text = entry.strip().lower().rstrip(".")
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            names.add(text)
    return _AllowList(frozenset(names), tuple(networks))


# --- URLs --------------------------------------------------------------------------------------


def _normalise_host(raw: str) -> tuple[str, IPAddress | None]:
    """Lower-case ASCII host and, when it is an IP literal, the address."""
    if "%" in raw:
        raise UnsafeUrl(
            INVALID_URL, "L'hôte d'une URL de webhook n'a ni index de zone ni encodage en %."
        )
    host = raw.lower()
    if ":" in host:  # only an IPv6 literal has a colon here (urlsplit removed the brackets)
        try:
            return host, ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise UnsafeUrl(INVALID_URL, f"{raw!r} n'est pas une adresse IPv6 valide.") from exc
    try:
        # IDNA 2003 maps full-width digits and dots too: check the result, not the input.
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise UnsafeUrl(INVALID_URL, f"{raw!r} n'est pas un nom d'hôte valide.") from exc
    host = host.removesuffix(".")
    try:
        return host, ipaddress.IPv4Address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        raise UnsafeUrl(
            INVALID_URL,
            f"{raw!r} est une adresse IPv4 sous une forme non standard (non-standard form) : "
            "écrivez-la en quatre nombres décimaux.",
        )
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise UnsafeUrl(INVALID_URL, f"{raw!r} n'est pas un nom d'hôte valide.")
    return host, None


def _check_name(host: str, allow: _AllowList) -> None:
    if allow.allows_name(host):
        return
    if any(host == name or host.endswith("." + name) for name in _LOCAL_NAMES):
        raise UnsafeUrl(HOST_NOT_ALLOWED, f"{host} est un nom purement local : {_PUBLIC_ONLY}.")
    if "." not in host:
        raise UnsafeUrl(
            HOST_NOT_ALLOWED,
            f"{host} n'est pas un nom de domaine complet : {_PUBLIC_ONLY}.",
        )


def check_address(ip: IPAddress, *, allowed_hosts: frozenset[str], host: str | None = None) -> None:
    """Refuse an address that is not public, unless the allow-list covers it."""
    if _allow_list(allowed_hosts).allows_address(ip):
        return
    problem = address_problem(ip)
    if problem is not None:
        raise _refusal(ip, problem, host=host)


def check_url(url: str, *, allow_http: bool, allowed_hosts: frozenset[str]) -> ParsedUrl:
    """Parse and check a webhook URL without any I/O; IP literals are checked here.

    A host name is checked by :func:`resolve_and_check`, which resolves it.
    """
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(INVALID_URL, f"Une URL de webhook a au plus {MAX_URL_LENGTH} caractères.")
    # urlsplit silently drops tabs and newlines, and parsers disagree about backslashes: refuse.
    if any(c <= " " or c in "\x7f\\" for c in url):
        raise UnsafeUrl(
            INVALID_URL,
            "Une URL de webhook n'a ni espace, ni caractère de contrôle, ni barre oblique "
            "inversée.",
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(INVALID_URL, "Ce n'est pas une URL valide.") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        shown = f"non par {scheme}://" if scheme else "avec son schéma"
        raise UnsafeUrl(SCHEME_NOT_ALLOWED, f"Une URL de webhook commence par https://, {shown}.")
    if scheme == "http" and not allow_http:
        raise UnsafeUrl(
            SCHEME_NOT_ALLOWED,
            "Une URL de webhook commence par https:// : le http simple n'est pas accepté.",
        )
    if "@" in parts.netloc:
        raise UnsafeUrl(
            USERINFO_NOT_ALLOWED,
            "Une URL de webhook ne porte ni nom d'utilisateur ni mot de passe : la signature "
            "authentifie les envois.",
        )
    if not parts.hostname:
        raise UnsafeUrl(INVALID_URL, "Une URL de webhook a un hôte.")
    if parts.fragment or url.endswith("#"):
        raise UnsafeUrl(INVALID_URL, "Une URL de webhook n'a pas de fragment (#…).")
    if port == 0:
        raise UnsafeUrl(INVALID_URL, "Le port d'une URL de webhook est entre 1 et 65535.")
    host, ip = _normalise_host(parts.hostname)
    if ip is not None:
        check_address(ip, allowed_hosts=allowed_hosts)
    else:
        _check_name(host, _allow_list(allowed_hosts))
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not target.startswith("/"):
        raise UnsafeUrl(INVALID_URL, "Le chemin de l'URL n'est pas valide.")
    return ParsedUrl(
        scheme=scheme,
        host=_show(ip) if ip is not None else host,
        port=port or (443 if scheme == "https" else 80),
        target=target,
        ip=ip,
    )


# --- resolution --------------------------------------------------------------------------------

Resolver = Callable[[str, int], Awaitable[Iterable[str]]]
"""Resolves a host name and port to IP address strings (all of them)."""


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (TCP), in its order, deduplicated."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve_and_check(
    host: str,
    port: int,
    *,
    resolver: Resolver = system_resolver,
    allowed_hosts: frozenset[str],
) -> list[str]:
    """The addresses to connect to for ``host``; refused if ANY of them is not public.

    ``host`` is :attr:`ParsedUrl.host`. One bad address among good ones refuses the host: a
    client may pick any of them. An allow-listed name is resolved but not checked; allow-listed
    networks exempt the addresses in them. Bound the time with ``asyncio.timeout`` around it.
    """
    allow = _allow_list(allowed_hosts)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        check_address(literal, allowed_hosts=allowed_hosts)
        return [str(literal)]
    try:
        answers = list(await resolver(host, port))
    except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
        raise UnsafeUrl(HOST_UNRESOLVABLE, f"{host} ne se résout pas ({exc}).") from exc
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            addresses.append(ipaddress.ip_address(answer))
        except ValueError as exc:
            raise UnsafeUrl(HOST_UNRESOLVABLE, f"{host} se résout en {answer!r}.") from exc
    if not addresses:
        raise UnsafeUrl(HOST_UNRESOLVABLE, f"{host} ne se résout en aucune adresse.")
    if not allow.allows_name(host.lower().rstrip(".")):
        for ip in addresses:
            check_address(ip, allowed_hosts=allowed_hosts, host=host)
    return list(dict.fromkeys(str(ip) for ip in addresses))


async def check_and_resolve(
    url: str,
    *,
    allow_http: bool,
    allowed_hosts: frozenset[str],
    resolver: Resolver = system_resolver,
) -> tuple[ParsedUrl, list[str]]:
    """:func:`check_url` then :func:`resolve_and_check`: the whole policy, at either time."""
    parsed = check_url(url, allow_http=allow_http, allowed_hosts=allowed_hosts)
    addresses = await resolve_and_check(
        parsed.host, parsed.port, resolver=resolver, allowed_hosts=allowed_hosts
    )
    return parsed, addresses


# --- connecting ----------------------------------------------------------------------------------


class CheckedNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the policy accepts.

    ``connect_tcp(host, port)`` resolves ``host`` with ``resolver`` and raises :class:`UnsafeUrl`
    unless every address passes :func:`resolve_and_check` (the allow-list honoured); then it
    connects to the checked addresses in order, the next one when a connection fails. Resolution
    and connection share the connect timeout. ``UnsafeUrl`` goes through httpcore and httpx
    untouched, so the caller of ``client.send`` sees the refusal and its code.
    """

    def __init__(
        self,
        *,
        allowed_hosts: frozenset[str],
        resolver: Resolver = system_resolver,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allowed_hosts = frozenset(allowed_hosts)
        self.resolver = resolver
        self._backend = backend or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                addresses = await resolve_and_check(
                    host, port, resolver=self.resolver, allowed_hosts=self.allowed_hosts
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"{host} did not resolve within {timeout:g} s") from exc
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            try:
                return await self._backend.connect_tcp(
                    address,
                    port,
                    timeout=remaining,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # resolve_and_check returns at least one address
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeUrl(INVALID_URL, "Les webhooks partent en TCP, jamais vers une socket Unix.")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
