"""A throwaway certificate authority for the TLS tests, made with the openssl command."""
import shutil
import subprocess

import pytest


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(folder, name="node", ca_name="ca"):
    """``(ca_file, cert_file, key_file)`` in ``folder``: a CA (made once per ``ca_name``) and a
    certificate it signed for ``name``, both P-256 keys, valid for two days."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    ca, ca_key = folder / f"{ca_name}.pem", folder / f"{ca_name}.key"
    key, cert, request = folder / f"{name}.key", folder / f"{name}.pem", folder / f"{name}.csr"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    if not ca.exists():
        _openssl("req", "-x509", *ec, "-keyout", ca_key.name, "-out", ca.name, "-days", "2",
                 "-subj", f"/CN=minigrad test {ca_name}", cwd=folder)
    _openssl("req", *ec, "-keyout", key.name, "-out", request.name, "-subj", f"/CN=minigrad test {name}",
             cwd=folder)
    _openssl("x509", "-req", "-in", request.name, "-CA", ca.name, "-CAkey", ca_key.name, "-CAcreateserial",
             "-out", cert.name, "-days", "2", cwd=folder)
    return str(ca), str(cert), str(key)
