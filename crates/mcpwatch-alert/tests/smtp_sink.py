"""A real SMTP server for the email tests (aiosmtpd), on 127.0.0.1:PORT.

    smtp_sink.py PORT [--tls implicit|starttls --certs DIR]

Prints READY once it listens, then one JSON line per message received:
{"from": ..., "to": [...], "data": "<the whole message>", "subject": ..., "headers": [...],
"body": ...}, where subject, header names and the decoded body are what Python's `email`
parser (a real mail reader's) makes of the message. Refuses recipients whose address starts
with `refuse` (550, permanent). Exits when stdin closes.

With --tls it makes a private CA and a server certificate for 127.0.0.1 and localhost (the
`cryptography` package), writes the CA to DIR/ca.pem and serves implicit TLS (smtps) or
requires STARTTLS. A second, unrelated CA is written to DIR/other-ca.pem, for tests of a
certificate the client must refuse.
"""

import datetime
import email
import email.policy
import ipaddress
import json
import os
import ssl
import sys

from aiosmtpd.controller import Controller


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refuse"):
            return "550 5.1.1 mailbox unavailable (refused by the test)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain", "html"))
        print(json.dumps({
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "subject": str(msg["subject"]),
            "headers": [k for k in msg.keys()],
            "body": body.get_content() if body is not None else None,
            "tls": session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
        }), flush=True)
        return "250 OK queued as mcpwatch-test"


def make_ca(name):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(ca_key, ca_cert):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_pem(path, data):
    with open(path, "wb") as f:
        f.write(data)


def tls_context(certs):
    from cryptography.hazmat.primitives import serialization

    os.makedirs(certs, exist_ok=True)
    ca_key, ca_cert = make_ca("mcpwatch test CA")
    _, other = make_ca("some other CA")
    key, cert = make_server_cert(ca_key, ca_cert)
    pem = serialization.Encoding.PEM
    write_pem(os.path.join(certs, "ca.pem"), ca_cert.public_bytes(pem))
    write_pem(os.path.join(certs, "other-ca.pem"), other.public_bytes(pem))
    chain = os.path.join(certs, "server.pem")
    keyfile = os.path.join(certs, "server.key")
    write_pem(chain, cert.public_bytes(pem))
    write_pem(keyfile, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(chain, keyfile)
    return ctx


def main():
    port = int(sys.argv[1])
    args = sys.argv[2:]
    kwargs = {}
    if "--tls" in args:
        mode = args[args.index("--tls") + 1]
        ctx = tls_context(args[args.index("--certs") + 1])
        if mode == "implicit":
            kwargs["ssl_context"] = ctx
        elif mode == "starttls":
            kwargs["tls_context"] = ctx
            kwargs["require_starttls"] = True
        else:
            sys.exit(f"unknown --tls mode {mode}; use implicit or starttls")
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print("READY", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
