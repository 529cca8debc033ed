#!/usr/bin/env python3
"""Submits messages over SMTP (STARTTLS + AUTH) until killed, for the crash test.

    smtp_flood.py HOST PORT CAFILE USER PASSWORD FROM TO

Prints `accepted <gateway id>` (flushed) for every 250 to the final dot, and nothing for
messages whose reply never came (the gateway died first). Reconnects after errors.
"""
import smtplib
import ssl
import sys
import time

host, port, cafile, user, password, sender, to = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=cafile)
n = 0
while True:
    try:
        s = smtplib.SMTP(host, int(port), timeout=10)
        s.starttls(context=ctx)
        s.login(user, password)
        for _ in range(20):
            n += 1
            msg = (f"From: {sender}\r\nTo: {to}\r\nSubject: Bescheid {n}\r\n\r\n"
                   f"Nachricht {n}\r\n")
            s.mail(sender)
            s.rcpt(to)
            code, text = s.data(msg.encode())
            if code == 250:
                print("accepted", text.decode().rsplit(" ", 1)[-1], flush=True)
        s.quit()
    except (OSError, smtplib.SMTPException):
        time.sleep(0.05)
