#!/usr/bin/env python3
"""A local RFC 3161 time-stamping authority for tests and the demo: OpenSSL's `ts -reply`
behind a minimal HTTP server (POST application/timestamp-query, answer
application/timestamp-reply).

    tsa.py DIR PORT_FILE [--rsa]

Creates DIR/tsa.key and DIR/tsa.crt (EC P-256, or RSA 2048 with --rsa; the extended key
usage critical and time-stamping only, as RFC 3161 requires and OpenSSL enforces) if they
do not exist, listens on 127.0.0.1 on a free port and writes that port to PORT_FILE.
"""
import http.server
import os
import subprocess
import sys
import tempfile

CONFIG = """
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = bote test TSA
O = bote tests
[ tsa_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = critical,timeStamping
subjectKeyIdentifier = hash
[ tsa ]
default_tsa = tsa_config
[ tsa_config ]
serial = {dir}/serial
crypto_device = builtin
signer_cert = {dir}/tsa.crt
signer_key = {dir}/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
other_policies = 1.2.3.4.2
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def main():
    directory, port_file = sys.argv[1], sys.argv[2]
    rsa = "--rsa" in sys.argv
    os.makedirs(directory, exist_ok=True)
    config = os.path.join(directory, "tsa.cnf")
    with open(config, "w") as f:
        f.write(CONFIG.format(dir=directory))
    if not os.path.exists(os.path.join(directory, "serial")):
        with open(os.path.join(directory, "serial"), "w") as f:
            f.write("01\n")
    if not os.path.exists(os.path.join(directory, "tsa.crt")):
        key = ["-newkey", "rsa:2048"] if rsa else [
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        subprocess.run(
            ["openssl", "req", "-x509", *key, "-nodes",
             "-keyout", os.path.join(directory, "tsa.key"),
             "-out", os.path.join(directory, "tsa.crt"),
             "-days", "3650", "-config", config, "-extensions", "tsa_ext"],
            check=True, capture_output=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            query = self.rfile.read(length)
            with tempfile.TemporaryDirectory() as tmp:
                q = os.path.join(tmp, "q.tsq")
                r = os.path.join(tmp, "r.tsr")
                with open(q, "wb") as f:
                    f.write(query)
                done = subprocess.run(
                    ["openssl", "ts", "-reply", "-queryfile", q, "-config", config,
                     "-out", r], capture_output=True)
                if done.returncode != 0:
                    self.send_response(400)
                    self.end_headers()
                    self.wfile.write(done.stderr)
                    return
                with open(r, "rb") as f:
                    reply = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp_port = port_file + ".tmp"
    with open(tmp_port, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp_port, port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
