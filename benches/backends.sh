#!/usr/bin/env bash
# Runs benches/backends.rs against SQLite and a throwaway PostgreSQL reached over TCP and
# over its Unix socket (one server, both listeners), started and removed here.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pg-throwaway.sh
source scripts/pg-throwaway.sh
unset BOTE_TEST_POSTGRES_URL
pg_throwaway_start
export BOTE_BENCH_POSTGRES_TCP="$BOTE_TEST_POSTGRES_URL"
export BOTE_BENCH_POSTGRES_UNIX="postgres:///postgres?host=$PG_THROWAWAY_DIR&port=$PG_THROWAWAY_PORT&user=postgres"
cargo bench --bench backends -- "$@"
