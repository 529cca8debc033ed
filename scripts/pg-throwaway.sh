# Sourced by scripts/test: starts a throwaway PostgreSQL cluster on a free loopback port
# (TCP with TLS, as production reaches its database; and a Unix socket in the cluster's
# directory), exports BOTE_TEST_POSTGRES_URL, and stops and deletes the cluster on exit.
# An already set BOTE_TEST_POSTGRES_URL is used as it is.

pg_throwaway_start() {
  if [ -n "${BOTE_TEST_POSTGRES_URL:-}" ]; then
    echo "test: using PostgreSQL at BOTE_TEST_POSTGRES_URL" >&2
    return 0
  fi
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "test: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
    return 1
  fi
  PG_THROWAWAY_DIR=$(mktemp -d /tmp/bote-pg.XXXXXX)
  local run=()
  if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root: run the cluster as the postgres system user.
    chown postgres "$PG_THROWAWAY_DIR"
    run=(runuser -u postgres --)
  fi
  PG_THROWAWAY_RUN=("${run[@]}")
  PG_THROWAWAY_BIN=$bin
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "${run[@]}" "$bin/initdb" -D "$PG_THROWAWAY_DIR/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
  # TLS on, as a production server reached over the network has it: the client then writes
  # requests as TLS records, the traffic in which Nagle's algorithm once stalled bote.
  openssl req -new -x509 -days 7 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$PG_THROWAWAY_DIR/data/server.key" -out "$PG_THROWAWAY_DIR/data/server.crt" 2>/dev/null
  chmod 0600 "$PG_THROWAWAY_DIR/data/server.key"
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$PG_THROWAWAY_DIR/data/server.key" "$PG_THROWAWAY_DIR/data/server.crt"
  fi
  # fsync off: this cluster lives for one test run; bote's own durability is SQLite's and
  # a production PostgreSQL's business, not this throwaway's.
  "${run[@]}" "$bin/pg_ctl" -D "$PG_THROWAWAY_DIR/data" -w -l "$PG_THROWAWAY_DIR/log" \
    -o "-p $port -k $PG_THROWAWAY_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 -c ssl=on" \
    start >/dev/null
  export BOTE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=require"
  PG_THROWAWAY_PORT=$port
  trap pg_throwaway_stop EXIT
  echo "test: throwaway PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
}

pg_throwaway_stop() {
  if [ -n "${PG_THROWAWAY_DIR:-}" ]; then
    "${PG_THROWAWAY_RUN[@]}" "$PG_THROWAWAY_BIN/pg_ctl" -D "$PG_THROWAWAY_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_THROWAWAY_DIR"
    PG_THROWAWAY_DIR=
  fi
}
