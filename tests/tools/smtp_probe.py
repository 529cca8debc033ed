#!/usr/bin/env python3
"""An SMTP client for the tests, on Python's smtplib (a real, independent SMTP stack).

    smtp_probe.py send HOST PORT starttls|tls CAFILE USER PASSWORD FROM TO[,TO…] [HEADER=VALUE…]
        prints the reply to the final dot as `CODE TEXT`
    smtp_probe.py raw HOST PORT starttls|tls|plain CAFILE < lines
        sends each stdin line (CRLF added unless it ends in an escaped \\n; `\\n`, `\\r`, `\\0`
        are LF, CR, NUL; a line `<TLS>` upgrades with STARTTLS, `<SLEEP S>` waits S
        seconds; a line starting with `~` is
        sent without waiting for a reply, as message lines are) and prints every reply line
        until the server closes

With PROBE_CLIENT_CERT and PROBE_CLIENT_KEY (PEM files) set, the client presents that
certificate in the TLS handshake.
"""
import os
import smtplib
import socket
import ssl
import sys
import time


def context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    if os.environ.get("PROBE_CLIENT_CERT"):
        ctx.load_cert_chain(os.environ["PROBE_CLIENT_CERT"], os.environ["PROBE_CLIENT_KEY"])
    return ctx


def send(host, port, mode, cafile, user, password, sender, to, headers):
    if mode == "tls":
        s = smtplib.SMTP_SSL(host, int(port), context=context(cafile), timeout=30)
    else:
        s = smtplib.SMTP(host, int(port), timeout=30)
        s.starttls(context=context(cafile))
    s.ehlo("probe.example")
    s.login(user, password)
    body = "".join(f"{h}: {v}\r\n" for h, v in headers)
    message = (f"From: {sender}\r\nTo: {', '.join(to)}\r\nSubject: Antrag per SMTP\r\n"
               f"{body}\r\nSehr geehrte Damen und Herren,\r\n.punkt am Zeilenanfang\r\n")
    code, text = s.mail(sender)
    if code != 250:
        print(code, text.decode())
        return
    for rcpt in to:
        code, text = s.rcpt(rcpt)
        if code != 250:
            print(code, text.decode())
            return
    code, text = s.data(message.encode())
    print(code, text.decode())
    s.quit()


def raw(host, port, mode, cafile):
    # PROBE_SOURCE: connect from another loopback address, as another client would.
    source = os.environ.get("PROBE_SOURCE")
    sock = socket.create_connection((host, int(port)), timeout=30,
                                    source_address=(source, 0) if source else None)
    if mode == "tls":
        sock = context(cafile).wrap_socket(sock, server_hostname=host)
    f = sock.makefile("rb")

    def replies():
        while True:
            line = f.readline()
            if not line:
                return False
            text = line.decode(errors="replace").rstrip("\r\n")
            print(text, flush=True)
            if len(text) < 4 or text[3] != "-":
                return True

    if not replies():
        return
    for line in sys.stdin.read().split("\n"):
        if line == "":
            continue
        if line == "<TLS>":
            sock.sendall(b"STARTTLS\r\n")
            if not replies():
                return
            sock = context(cafile).wrap_socket(sock, server_hostname=host)
            f = sock.makefile("rb")
            continue
        if line.startswith("<SLEEP ") and line.endswith(">"):
            time.sleep(float(line[7:-1]))
            continue
        wait = not line.startswith("~")
        text = line if wait else line[1:]
        data = text.encode().replace(b"\\n", b"\n").replace(b"\\r", b"\r").replace(b"\\0", b"\0")
        if not data.endswith(b"\n"):
            data += b"\r\n"
        sock.sendall(data)
        if wait and not replies():
            return


if __name__ == "__main__":
    if sys.argv[1] == "send":
        host, port, mode, cafile, user, password, sender, to = sys.argv[2:10]
        headers = [tuple(h.split("=", 1)) for h in sys.argv[10:]]
        send(host, port, mode, cafile, user, password, sender, to.split(","), headers)
    else:
        raw(*sys.argv[2:6])
