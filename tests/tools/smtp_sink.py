#!/usr/bin/env python3
"""An office's mail server for the tests: aiosmtpd, plain SMTP on 127.0.0.1.

    smtp_sink.py DIR PORT accept|reject|defer-once|slow[:SECONDS]|hold READY_FILE

Writes every accepted message to DIR/<n>.eml (the exact bytes received) and the envelope
to DIR/<n>.env; `reject` answers 550 to DATA, `defer-once` answers 451 to the first DATA
and accepts later ones; `slow` answers the final dot after SECONDS (2 by default), `hold`
once DIR/release exists. Both write the number of messages received so far (answered or
not) to DIR/data-started. READY_FILE appears once it listens, with the port in it: PORT 0
picks a free one here (narrower than a port chosen by the caller and bound after this
interpreter's start-up, which another test may take meanwhile). DIR/sessions holds the number of
SMTP sessions (connections that said EHLO, however often) so far, to tell whether the client
reuses its connections.
"""
import asyncio
import os
import sys

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, directory, mode):
        self.directory = directory
        self.mode = mode
        self.count = 0
        self.deferred = False
        self.sessions = 0
        self.started = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        # A client may say EHLO again on one connection (bote does, to read the
        # extensions lettre does not keep).
        if getattr(session, "counted", False):
            return responses
        session.counted = True
        self.sessions += 1
        with open(os.path.join(self.directory, "sessions.tmp"), "w") as f:
            f.write(f"{self.sessions}\n")
        os.replace(os.path.join(self.directory, "sessions.tmp"),
                   os.path.join(self.directory, "sessions"))
        return responses

    async def handle_DATA(self, server, session, envelope):
        if self.mode == "reject":
            return "550 5.7.1 Annahme verweigert: kein Vertrag mit diesem Absender"
        if self.mode == "defer-once" and not self.deferred:
            self.deferred = True
            return "451 4.3.0 Bitte spaeter erneut versuchen"
        if self.mode.startswith("slow") or self.mode == "hold":
            # A slow office server: the message is in, the 250 comes later.
            self.started += 1
            started = os.path.join(self.directory, "data-started")
            with open(started + ".tmp", "w") as f:
                f.write(f"{self.started}\n")
            os.replace(started + ".tmp", started)
            if self.mode == "hold":
                while not os.path.exists(os.path.join(self.directory, "release")):
                    await asyncio.sleep(0.02)
            else:
                await asyncio.sleep(float(self.mode.partition(":")[2] or 2))
        self.count += 1
        path = os.path.join(self.directory, f"{self.count}")
        with open(path + ".env", "w") as f:
            f.write(f"{envelope.mail_from}\n{','.join(envelope.rcpt_tos)}\n")
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.replace(path + ".tmp", path + ".eml")
        return "250 2.0.0 Ok: queued as KREIS%d" % self.count


def free_port():
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main():
    directory, port, mode, ready = sys.argv[1:5]
    os.makedirs(directory, exist_ok=True)
    port = int(port)
    tls = {}
    if os.environ.get("SINK_TLS_CERT"):
        # An office server with STARTTLS (and only with it): the relay's `required` mode.
        import ssl
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(os.environ["SINK_TLS_CERT"], os.environ["SINK_TLS_KEY"])
        tls = {"tls_context": context, "require_starttls": True}
    handler = Handler(directory, mode)
    # aiosmtpd cannot listen on port 0 (its readiness check connects to the port it was
    # given): a free port is looked up and bound at once, again if another process took it
    # in between.
    for attempt in range(10):
        chosen = port or free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=chosen,
                                decode_data=False, **tls)
        try:
            controller.start()
            break
        except OSError:
            if port or attempt == 9:
                raise
    port = chosen
    with open(ready + ".tmp", "w") as f:
        f.write(f"{port}\n")
    os.replace(ready + ".tmp", ready)
    try:
        asyncio.get_event_loop().run_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
