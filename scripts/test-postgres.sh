# Sourced by scripts/test.sh: starts a throwaway PostgreSQL server for the tests that need one
# (the store suite on PostgreSQL, the failover tests) and exports GHA_TEST_PG_URL. The tests
# create a database each and drop it; the server and its data directory are removed on exit.
# The server also speaks TLS with a certificate of a CA made here (GHA_TEST_PG_CA).
# A GHA_TEST_PG_URL already set (a server of your own) is used as it is.
#
# Debian's packages (`apt-get install postgresql`) put the server in /usr/lib/postgresql/N/bin;
# it runs as the `postgres` user when we are root (initdb refuses root), on 127.0.0.1 and a
# socket in its own directory, on a free port, with trust authentication (loopback only).

start_test_postgres() {
  if [ -n "${GHA_TEST_PG_URL:-}" ]; then
    return 0
  fi
  local bin
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "PostgreSQL is not installed (apt-get install postgresql)" >&2
    return 1
  fi
  GHA_TEST_PG_DIR="$(mktemp -d /tmp/gha-test-pg.XXXXXX)"
  local as=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$GHA_TEST_PG_DIR"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bin/initdb" -D "$GHA_TEST_PG_DIR/data" -A trust -U postgres -E UTF8 \
    --no-sync >"$GHA_TEST_PG_DIR/initdb.log" 2>&1 || {
    cat "$GHA_TEST_PG_DIR/initdb.log" >&2
    return 1
  }
  # TLS too (ssl=on), with a CA of its own, so that the tests of `sslmode=require` verify a real
  # server certificate (for 127.0.0.1 and localhost); plaintext connections stay allowed.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=gha-test-pg-ca" -keyout "$GHA_TEST_PG_DIR/ca.key" -out "$GHA_TEST_PG_DIR/ca.pem" \
    >/dev/null 2>&1 &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
      -keyout "$GHA_TEST_PG_DIR/server.key" -out "$GHA_TEST_PG_DIR/server.csr" >/dev/null 2>&1 &&
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$GHA_TEST_PG_DIR/san.ext" &&
    openssl x509 -req -in "$GHA_TEST_PG_DIR/server.csr" -CA "$GHA_TEST_PG_DIR/ca.pem" \
      -CAkey "$GHA_TEST_PG_DIR/ca.key" -CAcreateserial -days 2 \
      -extfile "$GHA_TEST_PG_DIR/san.ext" -out "$GHA_TEST_PG_DIR/server.pem" >/dev/null 2>&1 || {
    echo "openssl could not make the test server's certificate" >&2
    return 1
  }
  chmod 600 "$GHA_TEST_PG_DIR/server.key"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$GHA_TEST_PG_DIR"/server.key "$GHA_TEST_PG_DIR"/server.pem
  fi
  local port tries=0
  while :; do
    port=$((20000 + RANDOM % 40000))
    if "${as[@]}" "$bin/pg_ctl" -D "$GHA_TEST_PG_DIR/data" -l "$GHA_TEST_PG_DIR/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $GHA_TEST_PG_DIR -c max_connections=400 -c ssl=on -c ssl_cert_file=$GHA_TEST_PG_DIR/server.pem -c ssl_key_file=$GHA_TEST_PG_DIR/server.key" \
      start >/dev/null; then
      break
    fi
    tries=$((tries + 1))
    if [ "$tries" -ge 5 ]; then
      cat "$GHA_TEST_PG_DIR/server.log" >&2
      return 1
    fi
  done
  GHA_TEST_PG_STOP=("${as[@]}" "$bin/pg_ctl" -D "$GHA_TEST_PG_DIR/data" -m immediate stop)
  trap stop_test_postgres EXIT
  export GHA_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
  # The CA of the server's certificate, for the TLS tests (`sslrootcert=`).
  export GHA_TEST_PG_CA="$GHA_TEST_PG_DIR/ca.pem"
  echo "PostgreSQL for the tests: $GHA_TEST_PG_URL"
}

stop_test_postgres() {
  if [ -n "${GHA_TEST_PG_DIR:-}" ]; then
    "${GHA_TEST_PG_STOP[@]}" >/dev/null 2>&1 || true
    rm -rf "$GHA_TEST_PG_DIR"
  fi
}
