"""Where webhooks may go: an allow-list of public addresses, checked on the one DNS answer
the delivery then connects to (no rebinding), with TLS still verified for the URL's host.

DNS and the network are external inputs, so they are injected: `Dns` answers differently
on each lookup, and `Internet` routes a few public addresses to local receivers (any other
public address is unreachable: nothing leaves this machine) while loopback is real.
"""

import datetime
import ssl

import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from registry.errors import InvalidInput
from registry.models import Event, Webhook, WebhookDelivery
from registry.services import webhooks

from .receivers import Receiver

PUBLIC = "93.184.215.14"  # looks like any public host; `Internet` routes it to 127.0.0.2
HOST = "hooks.example.test"


class Dns:
    """A resolver whose answer changes from one lookup to the next (DNS rebinding)."""

    def __init__(self, *answers: str):
        self.answers, self.asked = list(answers), []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return [self.answers[min(len(self.asked), len(self.answers)) - 1]]


class Internet(httpcore.SyncBackend):
    """Connections to `routes`' public addresses land on local ones; loopback is dialled
    for real; anything else is unreachable. Records every address dialled."""

    def __init__(self, routes: dict[str, str]):
        self.routes, self.dialed = routes, []

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.dialed.append(host)
        if host not in self.routes and not host.startswith("127."):
            raise httpcore.ConnectError(f"{host} is unreachable from tests")
        target = self.routes.get(host, host)
        return super().connect_tcp(target, port, timeout, local_address, socket_options)


@pytest.mark.parametrize(
    "answer",
    [
        "10.0.0.1",
        "127.0.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "ff0e::1",
        "::ffff:10.0.0.1",  # IPv4-mapped
        "::ffff:127.0.0.1",
        "::10.0.0.1",  # IPv4-compatible (deprecated): refused whatever it carries
        "::8.8.8.8",
        "::ffff:0:808:808",  # IPv4-translated (SIIT)
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b:1::808:808",  # local-use NAT64, whatever it carries
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "2001::1",
    ],
)
def test_non_public_answers_are_refused_naming_the_setting(answer, settings):
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(InvalidInput) as refused:
        webhooks.check_url(f"https://{HOST}/x", resolve=Dns(answer))
    assert "non-public address" in refused.value.message
    assert "MODELGATE_WEBHOOK_ALLOW_PRIVATE" in refused.value.message


@pytest.mark.parametrize(
    "answer",
    [
        "8.8.8.8",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",  # mapped public IPv4
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
        "2002:808:808::1",  # 6to4 of 8.8.8.8
    ],
)
def test_public_answers_and_public_embeddings_are_allowed(answer, settings):
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = False
    assert webhooks.check_url(f"https://{HOST}/x", resolve=Dns(answer)) == f"https://{HOST}/x"


def test_one_private_answer_among_public_ones_refuses_the_name(settings):
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(InvalidInput, match=r"10\.0\.0\.1"):
        webhooks.check_url(f"http://{HOST}/x", resolve=lambda host, port: ["8.8.8.8", "10.0.0.1"])


def _hook(url: str) -> WebhookDelivery:
    """A webhook (stored as its check at creation let it through) and one pending delivery."""
    webhook = Webhook.objects.create(url=url, events=["*"], secret=webhooks.new_secret())
    event = Event.objects.create(type="model.created", actor_name="alice", model_name="m")
    return WebhookDelivery.objects.create(webhook=webhook, event=event)


def test_a_name_rebinding_to_loopback_after_the_check_cannot_reach_it(settings, db):
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = False
    with Receiver() as victim, Receiver(host="127.0.0.2", port=victim.port) as public:
        delivery = _hook(f"http://{HOST}:{victim.port}/hook")
        dns = Dns(PUBLIC, "127.0.0.1")  # public when checked, loopback when asked again
        internet = Internet({PUBLIC: "127.0.0.2"})
        webhooks.deliver(delivery.pk, resolve=dns, network=internet)

    assert dns.asked == [HOST]  # one lookup: the checked answer is the one used
    assert internet.dialed == [PUBLIC]
    assert victim.requests == []
    [sent] = public.requests
    assert sent["headers"]["Host"] == f"{HOST}:{victim.port}"  # the URL's host, not the IP
    delivery.refresh_from_db()
    assert delivery.state == "delivered"
    assert delivery.attempts[0]["address"] == PUBLIC


def test_a_name_that_turned_private_since_creation_is_refused_at_send_time(settings, db):
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = False
    with Receiver() as victim:
        delivery = _hook(f"http://{HOST}:{victim.port}/hook")
        internet = Internet({})
        with pytest.raises(RuntimeError, match="non-public"):
            webhooks.deliver(delivery.pk, resolve=Dns("127.0.0.1"), network=internet)
    assert victim.requests == [] and internet.dialed == []
    delivery.refresh_from_db()
    assert "MODELGATE_WEBHOOK_ALLOW_PRIVATE" in delivery.attempts[0]["error"]


# --- TLS: connecting by address, verifying for the name ----------------------------------


def _certificates(tmp_path, name: str) -> tuple[str, ssl.SSLContext]:
    """A throwaway CA (its PEM path, for SSL_CERT_FILE) and a server context whose
    certificate, signed by it, is valid for `name` only."""
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject, issuer, key, signer, ca: bool, san=None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
            ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("Test CA", "Test CA", ca_key, ca_key, ca=True)
    leaf = certificate(name, "Test CA", key, ca_key, ca=False, san=name)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (tmp_path / "leaf.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    return str(tmp_path / "ca.pem"), server


@pytest.mark.parametrize("certified_for", [HOST, "elsewhere.example.test"])
def test_https_by_address_sends_the_name_as_sni_and_verifies_the_certificate_for_it(
    certified_for, settings, db, tmp_path, monkeypatch
):
    settings.MODELGATE_WEBHOOK_ALLOW_PRIVATE = False
    ca, server = _certificates(tmp_path, certified_for)
    monkeypatch.setenv("SSL_CERT_FILE", ca)  # the sender trusts this CA (httpx's setting)
    server_names = []
    server.sni_callback = lambda sock, name, context: server_names.append(name)
    with Receiver(host="127.0.0.2", tls=server) as public:
        delivery = _hook(f"https://{HOST}:{public.port}/hook")
        internet = Internet({PUBLIC: "127.0.0.2"})
        if certified_for == HOST:
            webhooks.deliver(delivery.pk, resolve=Dns(PUBLIC), network=internet)
        else:
            with pytest.raises(RuntimeError, match="CERTIFICATE_VERIFY_FAILED"):
                webhooks.deliver(delivery.pk, resolve=Dns(PUBLIC), network=internet)
    delivery.refresh_from_db()
    assert internet.dialed == [PUBLIC] and server_names == [HOST]
    if certified_for == HOST:
        assert delivery.state == "delivered" and len(public.requests) == 1
    else:  # a certificate for another name: refused before anything is sent
        assert public.requests == [] and delivery.state == "pending"
