#!/usr/bin/env python3
"""Worst case the limits allow: see README.md next to this file."""

import base64
import concurrent.futures
import json
import os
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BOTE = os.path.join(ROOT, "target", "release", "bote")
DOMAIN = "bench.example"
RECIPIENTS = 100
ATTACHMENTS = 998  # + multipart root + text part = 1,000 MIME parts
LIMIT = 20 * 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bote(args, stdin=""):
    out = subprocess.run([BOTE, *args], input=stdin, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bote {' '.join(args)}: {out.stderr}")
    return out.stdout


class Sampler(threading.Thread):
    """Samples the server's resident set every 20 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, False

    def rss(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def hwm(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0


def message(n):
    """Just under the size limit, 1,000 MIME parts."""
    boundary = "b-worst-case"
    head = (
        f"From: amt@{DOMAIN}\r\nTo: many@{DOMAIN}\r\nSubject: Akte {n}\r\n"
        f"Message-ID: <worst-{n}-{time.time_ns()}@akten.example>\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nAnbei die Akte.\r\n"
    )
    budget = LIMIT - len(head) - 64 * 1024
    # base64 in 76-character lines with CRLF: 78 bytes of text per 57 bytes of content.
    per = (budget // ATTACHMENTS - 160) * 57 // 78
    body = base64.encodebytes(os.urandom(per)).replace(b"\n", b"\r\n").decode()
    parts = [head]
    for i in range(ATTACHMENTS):
        parts.append(
            f"--{boundary}\r\nContent-Type: application/pdf\r\n"
            f'Content-Disposition: attachment; filename="seite-{i:04}.pdf"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{body}"
        )
    parts.append(f"--{boundary}--\r\n")
    raw = "".join(parts).encode()
    assert len(raw) <= LIMIT, len(raw)
    return raw


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="bote-worst-")
    try:
        run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work):
    bote(["init", "--dir", work, "--domain", DOMAIN])
    config = os.path.join(work, "bote.toml")
    port = free_port()
    env = dict(os.environ, BOTE_HTTP_LISTEN=f"127.0.0.1:{port}", BOTE_HTTP_METRICS_LISTEN="",
               BOTE_SMTP_MX_LISTEN="", BOTE_SMTP_SUBMISSION_LISTEN="",
               BOTE_SMTP_SUBMISSIONS_LISTEN="")
    os.environ.update(env)
    bote(["mailbox", "add", "--office", f"amt@{DOMAIN}", "--name", "Amt", "--config", config])
    for i in range(RECIPIENTS):
        bote(["mailbox", "add", "--office", f"o{i}@{DOMAIN}", "--name", f"O{i}", "--config", config])
    bote(["user", "add", "--role", "legal", "--name", "Justiz", "--email", f"justiz@{DOMAIN}",
          "--password-stdin", "--config", config], "a long enough password\n")
    token = bote(["token", "create", "--mailbox", f"amt@{DOMAIN}", "--config", config]).strip()
    server = subprocess.Popen([BOTE, "serve", "--config", config], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = ssl.create_default_context(cafile=os.path.join(work, "certs", "ca.crt"))
    ctx.check_hostname = False
    base = f"https://127.0.0.1:{port}"

    def call(method, path, token=None, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(base + path, data=data, method=method)
        if token:
            req.add_header("authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("content-type", "application/json")
        started = time.monotonic()
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=600) as r:
                payload = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            payload, status = e.read(), e.code
        return status, payload, time.monotonic() - started

    for _ in range(100):
        try:
            if call("GET", "/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    sampler = Sampler(server.pid)
    idle = sampler.rss()
    sampler.start()
    to = [f"o{i}@{DOMAIN}" for i in range(RECIPIENTS)]
    try:
        measure(call, server, sampler, idle, token, to, work)
    finally:
        server.terminate()
        server.wait()


def measure(call, server, sampler, idle, token, to, work):
    raw = message(0)
    status, payload, took = call("POST", "/api/v1/messages", token,
                                 {"to": to, "rfc5322": base64.b64encode(raw).decode()})
    assert status == 201, payload[:300]
    gateway_id = json.loads(payload)["gateway_id"]
    rows = [("submit (201)", took, len(payload))]

    legal = json.loads(call("POST", "/api/v1/session", body={
        "email": f"justiz@{DOMAIN}", "password": "a long enough password"})[1])["token"]
    status, payload, took = call("GET", f"/api/v1/evidence?message={gateway_id}", legal)
    rows.append((f"evidence of the message ({status})", took, len(payload)))
    status, payload, took = call("GET", "/api/v1/evidence", legal)
    rows.append((f"plain GET /api/v1/evidence ({status})", took, len(payload)))
    status, payload, took = call("GET", f"/api/v1/evidence/bundle?message={gateway_id}&recipient=o7@{DOMAIN}", legal)
    rows.append((f"bundle for one recipient ({status})", took, len(payload)))

    single_peak = sampler.peak
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        bodies = [{"to": to, "rfc5322": base64.b64encode(message(n)).decode()} for n in range(1, 5)]
        results = list(pool.map(lambda b: call("POST", "/api/v1/messages", token, b), bodies))
    statuses = sorted(r[0] for r in results)
    rows.append((f"4 at once {statuses}", time.monotonic() - started, sum(len(r[1]) for r in results)))
    sampler.stop = True
    hwm = sampler.hwm()

    db = sqlite3.connect(os.path.join(work, "data", "bote.db"))
    records, largest, total = db.execute(
        "SELECT COUNT(*), MAX(LENGTH(record)), SUM(LENGTH(record)) FROM evidence").fetchone()
    print(f"message: {len(raw):,} bytes, {ATTACHMENTS + 2} MIME parts, {RECIPIENTS} recipients")
    print(f"{'step':48} {'seconds':>8} {'response bytes':>15}")
    for name, took, size in rows:
        print(f"{name:48} {took:8.2f} {size:15,}")
    print(f"evidence records stored: {records}, largest {largest:,} bytes, all {total:,} bytes")
    print(f"server RSS: idle {idle / 2**20:.0f} MiB, peak after one {single_peak / 2**20:.0f} MiB, "
          f"high-water mark after four at once {hwm / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
