#!/usr/bin/env python3
"""bote's full SMTP path against a plain Postfix relay, on this machine (issue 12, item 4).

    sudo benches/smtp_relay/run.py [--messages 5000] [--sessions 20] [--runs 5]
                                   [--sizes 1024,10240,102400] [--no-build] [--half-load]

Contenders, alternated within each size, --runs times each, medians reported:
  postfix      smtp-source -> private Postfix 3.7 (queue on disk) -> smtp-sink
  postfix/lg   the same Postfix, driven by benches/smtp_load.rs in plain SMTP (so that
               Postfix's reply-to-final-dot latency is measured by the same client as bote's)
  bote         smtp_load.rs (STARTTLS + AUTH PLAIN with a mailbox token, as office software)
               -> `bote serve` (release build, SQLite in a data dir on disk, or with
               --database postgres a private PostgreSQL cluster) submission port ->
               provider signature, encryption, durable commit, evidence in the log ->
               relay worker -> smtp-sink (the external office's server, TLS mode none)
Every contender: one connection per message (smtp-source's default; --keep-connections: one
per session, smtp-source -d), no PIPELINING from the client, one recipient. Throughput is end to end: from the client's first connection to the
moment smtp-sink has counted every message (`smtp-sink -c`). Latency is client side: from the
final dot written to its reply. Also measured once per size: the load generator alone
against smtp-sink (the client's ceiling) and smtp-source alone against smtp-sink.
--half-load adds, per size, a bote run paced at half its median peak (p50/p99 at half load).

Needs root (Postfix, smtp-sink -u nobody), Debian's postfix (scripts/setup-deps --test) and gpg.
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
INSTANCE = os.path.join(ROOT, "tests", "tools", "postfix_instance.sh")
FROM = "bauamt@lemgo.example"
TO = "amt@kreis.example"
PASSWORD = "a long enough password"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


class Sink:
    """smtp-sink counting messages; remembers when the count reached a target."""

    def __init__(self, port):
        self.port = port
        self.proc = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{port}", "1024"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.count = 0
        self.target = None
        self.reached = None
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        wait_port(port)

    def _read(self):
        buf = b""
        while True:
            chunk = self.proc.stdout.read1(4096)
            if not chunk:
                return
            now = time.time()
            buf = (buf + chunk)[-256:]
            found = re.findall(rb"mesg=(\d+)", buf)
            if found:
                with self.cond:
                    self.count = int(found[-1])
                    if self.target and self.reached is None and self.count >= self.target:
                        self.reached = now
                    self.cond.notify_all()

    def expect(self, n):
        with self.cond:
            self.base = self.count
            self.target = self.base + n
            self.reached = None

    def retarget(self, n):
        """Expects n messages since expect() after all (some were refused)."""
        with self.cond:
            self.target = self.base + n
            if self.reached is None and self.count >= self.target:
                self.reached = time.time()

    def wait(self, timeout):
        deadline = time.time() + timeout
        with self.cond:
            while self.reached is None:
                left = deadline - time.time()
                if left <= 0:
                    raise SystemExit(f"smtp-sink counted {self.count}, expected {self.target}")
                self.cond.wait(left)
            return self.reached

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def sh(cmd, stdin=None, env=None):
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr}")
    return out.stdout


def build(no_build):
    if not no_build:
        log("run: cargo build --release --bin bote; cargo bench --bench smtp_load --no-run")
        sh(["cargo", "build", "--release", "--bin", "bote"])
    out = subprocess.run(
        ["cargo", "bench", "--bench", "smtp_load", "--no-run", "--message-format=json"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    loadgen = None
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg["target"]["name"] == "smtp_load":
            loadgen = msg["executable"]
    if not loadgen:
        raise SystemExit("no smtp_load executable")
    return os.path.join(ROOT, "target", "release", "bote"), loadgen


class Bote:
    """A gateway in WORK/bote: a local office (the sender), an external office relayed to
    smtp-sink on `sink_port` (TLS none), a token; `bote serve` with submission only."""

    def __init__(self, bote, work, sink_port, database_url=None):
        self.bin = bote
        self.dir = os.path.join(work, "bote")
        self.database_url = database_url
        sh([bote, "init", "--dir", self.dir, "--domain", "lemgo.example"], env=self.env())
        self.cli("user", "add", "--role", "staff", "--name", "Bernd", "--email",
                 "bernd@lemgo.example", "--password-stdin", stdin=PASSWORD + "\n")
        out = self.cli("mailbox", "add", "--office", FROM, "--name", "Bauamt")
        code = re.search(r"recovery-code: (\S+)", out).group(1)
        self.cli("mailbox", "add-member", "--mailbox", FROM, "--user", "bernd@lemgo.example",
                 "--recovery-code-stdin", stdin=code + "\n")
        gnupg = os.path.join(work, "gnupg")
        os.makedirs(gnupg, mode=0o700)
        sh(["gpg", "--homedir", gnupg, "--batch", "--pinentry-mode", "loopback", "--passphrase",
            "", "--quick-gen-key", f"Kreis <{TO}>", "future-default", "default", "never"])
        cert = os.path.join(work, "kreis.asc")
        with open(cert, "w") as f:
            f.write(sh(["gpg", "--homedir", gnupg, "--batch", "--export", "--armor", TO]))
        self.cli("mailbox", "add", "--office", TO, "--name", "Kreis", "--relay",
                 f"127.0.0.1:{sink_port}", "--relay-tls", "none", "--cert", cert)
        self.token = self.cli("token", "create", "--mailbox", FROM).strip()
        # Office rate limits (10,000 messages an hour by default) would refuse a benchmark;
        # builds before them lack the command, and need nothing.
        subprocess.run([bote, "mailbox", "rate-limit", "--office", FROM, "--messages-per-hour",
                        "0", "--recipients-per-hour", "0", "--config",
                        os.path.join(self.dir, "bote.toml")], env=self.env(),
                       capture_output=True)
        self.ca = os.path.join(self.dir, "certs", "ca.crt")
        self.port = free_port()
        self.proc = None

    def cli(self, *args, stdin=None):
        return sh([self.bin, *args, "--config", os.path.join(self.dir, "bote.toml")],
                  stdin=stdin, env=self.env())

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOTE_")}
        env.pop("RUST_LOG", None)
        # As deploy/bote.service runs it. With RUST_BACKTRACE set (some shells and CI set
        # it), every anyhow error sequoia makes and discards while it validates a
        # recipient's keys captures a backtrace: ~2 % of bote's CPU at 1 KiB.
        env.pop("RUST_BACKTRACE", None)
        env.pop("RUST_LIB_BACKTRACE", None)
        if self.database_url:
            env["BOTE_DATABASE_URL"] = self.database_url
        return env

    def start(self):
        env = self.env()
        env.update({
            "BOTE_HTTP_LISTEN": "",
            "BOTE_HTTP_METRICS_LISTEN": "",
            "BOTE_SMTP_MX_LISTEN": "",
            "BOTE_SMTP_SUBMISSIONS_LISTEN": "",
            "BOTE_SMTP_SUBMISSION_LISTEN": f"127.0.0.1:{self.port}",
            "RUST_LOG": "warn",
        })
        self.proc = subprocess.Popen(
            [self.bin, "serve", "--config", os.path.join(self.dir, "bote.toml")], env=env,
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "serve.log"), "a"))
        wait_port(self.port)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


class Postfix:
    def __init__(self, work, sink_port):
        self.dir = os.path.join(work, "postfix")
        os.makedirs(self.dir)
        os.chmod(work, 0o755)
        self.port = free_port()
        sh([INSTANCE, "start", self.dir, str(self.port), f"[127.0.0.1]:{sink_port}"])

    def stop(self):
        subprocess.run([INSTANCE, "stop", self.dir], capture_output=True)


class PgCluster:
    """A private PostgreSQL cluster in WORK/pg on a free loopback port, as production runs
    one: on disk, fsync and synchronous commit on, reached over TCP with TLS. One database
    per gateway (`database(name)`), so every size starts from an empty one."""

    def __init__(self, work):
        root = "/usr/lib/postgresql"
        bins = sorted((d for d in (os.listdir(root) if os.path.isdir(root) else [])
                       if os.path.isdir(f"{root}/{d}/bin")),
                      key=lambda v: [int(p) for p in re.findall(r"\d+", v)])
        if not bins:
            raise SystemExit("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.bin = f"{root}/{bins[-1]}/bin"
        # The server runs as `postgres`, which must reach its directory inside WORK.
        os.chmod(work, 0o755)
        self.dir = os.path.join(work, "pg")
        os.makedirs(self.dir)
        shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.as_postgres([f"{self.bin}/initdb", "-D", self.data, "-U", "postgres", "-A",
                          "trust", "-E", "UTF8"])
        key, crt = os.path.join(self.data, "server.key"), os.path.join(self.data, "server.crt")
        sh(["openssl", "req", "-new", "-x509", "-days", "7", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", key, "-out", crt])
        os.chmod(key, 0o600)
        for f in (key, crt):
            shutil.chown(f, "postgres")
        self.as_postgres([f"{self.bin}/pg_ctl", "-D", self.data, "-w", "-l",
                          os.path.join(self.dir, "log"), "-o",
                          f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                          "-c ssl=on -c max_connections=100 -c max_wal_size=8GB "
                          "-c checkpoint_timeout=15min", "start"])

    def as_postgres(self, cmd):
        return sh(["runuser", "-u", "postgres", "--", *cmd])

    def database(self, name):
        self.as_postgres([f"{self.bin}/psql", "-h", self.dir, "-p", str(self.port), "-U",
                          "postgres", "-c", f"CREATE DATABASE {name}"])
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}?sslmode=require"

    def stop(self):
        subprocess.run(["runuser", "-u", "postgres", "--", f"{self.bin}/pg_ctl", "-D",
                        self.data, "-m", "fast", "stop"], capture_output=True)


# --keep-connections: every session sends all its messages over one connection.
KEEP = False


def loadgen(binary, port, n, sessions, size, bote=None, rate=0.0):
    cmd = [binary, "--port", str(port), "--from", FROM, "--to", TO, "--messages", str(n),
           "--sessions", str(sessions), "--size", str(size), "--rate", str(rate)]
    if KEEP:
        cmd += ["--per-connection", str(-(-n // sessions))]
    if bote:
        cmd += ["--tls", "--ca", bote.ca, "--user", FROM, "--password", bote.token]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"smtp_load failed: {out.stderr}")
    r = json.loads(out.stdout)
    if r["failed"]:
        log(f"run: {r['failed']} failed, first: {r['first_error']}")
    return r


def smtp_source(port, n, sessions, size):
    # -l is the body length; smtp-source adds From/To/Date/Message-Id headers (~150 bytes).
    start = time.time()
    subprocess.run(["smtp-source", *(["-d"] if KEEP else []), "-s", str(sessions), "-m",
                    str(n), "-l", str(size), "-f", FROM, "-t", TO, f"127.0.0.1:{port}"],
                   check=True,
                   stdout=subprocess.DEVNULL)
    return {"start_unix": start, "end_unix": time.time(), "ok": n, "failed": 0}


def one_run(kind, sink, n, run):
    """Runs `run()` (a client) while `sink` counts n messages; throughput end to end."""
    sink.expect(n)
    r = run()
    if r["failed"]:
        # Refused messages never reach the sink: wait for those that should arrive.
        sink.retarget(r["ok"])
    reached = sink.wait(600)
    r["msgs_per_s"] = r["ok"] / (reached - r["start_unix"])
    r["client_s"] = r["end_unix"] - r["start_unix"]
    r["drain_s"] = reached - r["end_unix"]
    r["accepted_per_s"] = r["ok"] / r["client_s"]
    log(f"run: {kind:10} {r['ok']} msgs {r['msgs_per_s']:7.0f}/s "
        f"(client {r['client_s']:.2f}s, drain after {max(r['drain_s'], 0):.2f}s) "
        f"p50 {r.get('p50_ms', float('nan')):.1f} ms p99 {r.get('p99_ms', float('nan')):.1f} ms"
        f"{' 421s retried: %d' % r['refused_connections'] if r.get('refused_connections') else ''}")
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--sizes", default="1024,10240,102400")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--half-load", action="store_true")
    p.add_argument("--contenders", default="bote,postfix,postfix/lg")
    p.add_argument("--json", help="also write the raw results here")
    p.add_argument("--keep-connections", action="store_true",
                   help="each session sends all its messages over one connection "
                        "(smtp-source -d; smtp_load --per-connection)")
    p.add_argument("--bote-bin", help="this bote binary instead of target/release/bote")
    p.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite",
                   help="bote's backend: SQLite in its data dir (the embedded default) or a "
                        "private PostgreSQL cluster on this machine (fsync on, TCP + TLS)")
    a = p.parse_args()
    global KEEP
    KEEP = a.keep_connections
    if os.geteuid() != 0:
        raise SystemExit("run.py needs root (a private Postfix; smtp-sink -u nobody)")
    for tool in ("postfix", "smtp-source", "smtp-sink", "gpg"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"{tool} is missing: scripts/setup-deps --test")
    os.chdir(ROOT)
    bote_bin, lg = build(a.no_build)
    bote_bin = a.bote_bin or bote_bin
    sizes = [int(s) for s in a.sizes.split(",")]
    contenders = a.contenders.split(",")
    results = {}
    for size in sizes:
        # On disk, as in production (not /tmp if that is a tmpfs).
        work = tempfile.mkdtemp(prefix="bote-smtp-bench-", dir="/var/tmp")
        sink_port = free_port()
        sink = Sink(sink_port)
        postfix = bote = pg = None
        try:
            postfix = Postfix(work, sink_port)
            url = None
            if a.database == "postgres":
                pg = PgCluster(work)
                url = pg.database(f"bote_{size}")
            bote = Bote(bote_bin, work, sink_port, url)
            bote.start()
            n, s = a.messages, a.sessions
            # Warm-up (caches, SQLite file growth, Postfix's processes), not counted.
            one_run("warm-up", sink, 200, lambda: loadgen(lg, bote.port, 200, s, size, bote))
            one_run("warm-up", sink, 200, lambda: smtp_source(postfix.port, 200, s, size))
            ceiling = {
                "smtp_load->sink": one_run("lg->sink", sink, n,
                                           lambda: loadgen(lg, sink_port, n, s, size)),
                "smtp-source->sink": one_run("src->sink", sink, n,
                                             lambda: smtp_source(sink_port, n, s, size)),
            }
            runs = {c: [] for c in contenders}
            for i in range(a.runs):
                order = contenders if i % 2 == 0 else list(reversed(contenders))
                for c in order:
                    if c == "bote":
                        f = lambda: loadgen(lg, bote.port, n, s, size, bote)
                    elif c == "postfix":
                        f = lambda: smtp_source(postfix.port, n, s, size)
                    else:
                        f = lambda: loadgen(lg, postfix.port, n, s, size)
                    runs[c].append(one_run(c, sink, n, f))
            half = None
            if a.half_load and "bote" in runs:
                peak = statistics.median(r["msgs_per_s"] for r in runs["bote"])
                half = one_run("bote@half", sink, n // 2,
                               lambda: loadgen(lg, bote.port, n // 2, s, size, bote,
                                               rate=peak / 2))
                half["rate"] = peak / 2
            results[size] = {"runs": runs, "ceiling": ceiling, "half": half}
        finally:
            if bote:
                bote.stop()
            if postfix:
                postfix.stop()
            if pg:
                pg.stop()
            sink.stop()
            shutil.rmtree(work, ignore_errors=True)

    def med(rs, key):
        vals = [r[key] for r in rs if key in r]
        return statistics.median(vals) if vals else float("nan")

    per = "one connection per session" if KEEP else "one connection per message"
    print(f"\n{a.messages} messages, {a.sessions} sessions, {per}, bote on {a.database}, "
          f"medians of {a.runs} runs (alternated)\n")
    print("| size | contender | msgs/s end to end | min–max | accepted/s (client) | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for size, res in results.items():
        for c, rs in res["runs"].items():
            v = [r["msgs_per_s"] for r in rs]
            print(f"| {size // 1024} KiB | {c} | {med(rs, 'msgs_per_s'):.0f} | "
                  f"{min(v):.0f}–{max(v):.0f} | {med(rs, 'accepted_per_s'):.0f} | "
                  f"{med(rs, 'p50_ms'):.1f} | {med(rs, 'p99_ms'):.1f} |")
        for c, r in res["ceiling"].items():
            print(f"| {size // 1024} KiB | {c} (ceiling) | {r['msgs_per_s']:.0f} | | "
                  f"{r['accepted_per_s']:.0f} | "
                  f"{r.get('p50_ms', float('nan')):.1f} | {r.get('p99_ms', float('nan')):.1f} |")
        if res["half"]:
            h = res["half"]
            print(f"| {size // 1024} KiB | bote at half load ({h['rate']:.0f}/s) | "
                  f"{h['msgs_per_s']:.0f} | | {h['accepted_per_s']:.0f} | "
                  f"{h['p50_ms']:.1f} | {h['p99_ms']:.1f} |")
    print()
    for size, res in results.items():
        if "bote" in res["runs"] and "postfix" in res["runs"]:
            ratio = med(res["runs"]["bote"], "msgs_per_s") / med(res["runs"]["postfix"],
                                                                 "msgs_per_s")
            print(f"{size // 1024} KiB: bote/Postfix = {ratio:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
