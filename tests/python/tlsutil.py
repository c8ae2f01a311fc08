"""Test-time TLS material made with the openssl CLI: a CA, server certificates for
127.0.0.1/localhost (with a chosen serial, so a reload can be told apart) and client
certificates with a chosen subject. Nothing here is meant for anything but tests."""

import shutil
import socket
import ssl
import struct
import subprocess
from pathlib import Path


def _openssl(*args, cwd):
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl CLI is needed (scripts/bootstrap.sh installs it)")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class Pki:
    """A CA in `folder`, and certificates it signs."""

    def __init__(self, folder):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca.key"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", str(self.ca_key), "-out", str(self.ca), "-days", "2",
                 "-subj", "/CN=Spate Test CA", cwd=self.dir)

    def _sign(self, name, subject, serial, ext):
        key, csr, cert = (self.dir / f"{name}.key", self.dir / f"{name}.csr",
                          self.dir / f"{name}.pem")
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", str(key), cwd=self.dir)
        _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr), cwd=self.dir)
        extfile = self.dir / f"{name}.ext"
        extfile.write_text(ext)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.ca_key),
                 "-set_serial", str(serial), "-days", "2", "-extfile", str(extfile),
                 "-out", str(cert), cwd=self.dir)
        return cert, key

    def server(self, name="server", serial=1000):
        """(cert, key) for 127.0.0.1 and localhost."""
        return self._sign(name, "/CN=localhost", serial,
                          "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                          "extendedKeyUsage=serverAuth\n")

    def client(self, name, subject, serial=2000):
        """(cert, key) of a client certificate with `subject` (openssl's /K=V/K=V form)."""
        return self._sign(name, subject, serial, "extendedKeyUsage=clientAuth\n")


def client_context(pki, cert=None, key=None):
    """A Python TLS client context that trusts the CA (and presents a certificate if given)."""
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def api_versions_frame(corr=1):
    msg = struct.pack(">hhih", 18, 0, corr, 4) + b"test"
    return struct.pack(">i", len(msg)) + msg


def recv_frame(sock):
    """One size-prefixed response; raises EOFError if the connection closes first."""
    def exactly(n):
        buf = b""
        while len(buf) < n:
            got = sock.recv(n - len(buf))
            if not got:
                raise EOFError("connection closed")
            buf += got
        return buf
    size = struct.unpack(">i", exactly(4))[0]
    return exactly(size)


def api_versions_over(sock, corr=1):
    """Sends ApiVersions v0 and returns its error code (0 when it works)."""
    sock.sendall(api_versions_frame(corr))
    body = recv_frame(sock)
    got_corr, error = struct.unpack(">ih", body[:6])
    assert got_corr == corr, (got_corr, corr)
    return error


def client_hello(host="localhost"):
    """The bytes of a real TLS ClientHello (what a client sends first)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=host)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def closed_by_peer(sock, timeout=15):
    """Whether the peer closes `sock` (EOF or reset) within `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
