# Shared by scripts/test, scripts/run and the benchmarks: installs what a fresh
# machine lacks, and starts a throwaway PostgreSQL cluster and Kafka-protocol
# broker (tansu) on free loopback ports. Source it; call `cleanup` on exit.

CACHE_DIR="${NOTIFICATION_CACHE_DIR:-$HOME/.cache/notification-host}"
# One target dir for the host, the tests and the components, outside the clone
# so that a fresh clone (and CI) reuses earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE_DIR/target}"
TANSU_VERSION="0.6.0"
# dynostore: the in-memory engine of the shared test broker; libsql: the
# SQLite engine of the broker-restart test, whose data must survive a restart.
TANSU_FEATURES="dynostore,libsql"
# Built at opt-level 1: 8 minutes on 2 cores instead of 10, for a broker
# that serves tests and benchmarks on one machine (the benchmarks measure
# the host, and a slower broker only makes their figures conservative).
TANSU_PROFILE="--config profile.release.opt-level=1"
# The tests that kill or restart a broker run one of their own, also when
# KAFKA_BOOTSTRAP_SERVERS names an external broker.
export TANSU_BIN="$CACHE_DIR/tools/bin/tansu"
WASM_DIR="$CARGO_TARGET_DIR/wasm32-wasip2/release"
export NORMALIZER_WASM_DIR="$WASM_DIR"

log() { printf '==> %s\n' "$*" >&2; }

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "missing system packages: $* (install them, or run as root)"; return 1
  fi
  [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq >&2; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

pg_bin_dir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

# Everything a script needs: the system packages, then the broker.
ensure_tools() {
  ensure_system_tools
  ensure_tansu
}

ensure_system_tools() {
  # Build tools for librdkafka (built from source by rdkafka-sys) and OpenSSL headers.
  local pkgs=()
  command -v cc >/dev/null || pkgs+=(gcc)
  command -v make >/dev/null || pkgs+=(make)
  command -v pkg-config >/dev/null || pkgs+=(pkg-config)
  command -v python3 >/dev/null || pkgs+=(python3)
  [ -f /usr/include/openssl/ssl.h ] || pkgs+=(libssl-dev)
  [ -f /usr/include/zlib.h ] || pkgs+=(zlib1g-dev)
  pg_bin_dir >/dev/null || pkgs+=(postgresql)
  id postgres >/dev/null 2>&1 || pkgs+=(postgresql)
  # The console tests drive a real browser: Debian's Chromium and its
  # ChromeDriver, installed together so their versions match.
  { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || pkgs+=(chromium chromium-driver)
  # scripts/validate-deploy checks the compose files (installed here, before
  # scripts/test runs it beside other work, so that only one apt-get runs).
  command -v docker-compose >/dev/null || pkgs+=(docker-compose)
  [ ${#pkgs[@]} = 0 ] || { log "installing ${pkgs[*]}"; apt_install "${pkgs[@]}"; }

  # The API test validates the served OpenAPI document with a standard validator.
  if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
    log "installing openapi-spec-validator (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check "openapi-spec-validator==0.9.0" >&2
  fi
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    log "adding the wasm32-wasip2 target"
    rustup target add wasm32-wasip2 >&2
  fi
}

# The broker is built from crates.io once per cache (the longest install).
ensure_tansu() {
  local built="$CACHE_DIR/tools/tansu.build"
  if [ ! -x "$TANSU_BIN" ] || [ "$(cat "$built" 2>/dev/null)" != "$TANSU_VERSION $TANSU_FEATURES $TANSU_PROFILE" ]; then
    log "installing the tansu broker $TANSU_VERSION ($TANSU_FEATURES) into $CACHE_DIR/tools (once; takes about 8 minutes)"
    # shellcheck disable=SC2086 # TANSU_PROFILE is a list of --config flags
    CARGO_TARGET_DIR="$CACHE_DIR/tansu-build" cargo install tansu --version "$TANSU_VERSION" \
      --locked --features "$TANSU_FEATURES" $TANSU_PROFILE --root "$CACHE_DIR/tools" --force >&2
    echo "$TANSU_VERSION $TANSU_FEATURES $TANSU_PROFILE" >"$built"
  fi
}

# Tools whose own speed does not matter (they check a few files) are built
# without optimisation, which takes a fraction of a release build. A tool is
# installed when its `--version` is not the expected line.
ensure_tool() { # binary, expected --version line, crate, version [cargo install flags ...]
  local bin="$CACHE_DIR/tools/bin/$1" expected="$2" crate="$3" version="$4"
  shift 4
  [ "$("$bin" --version 2>/dev/null)" != "$expected" ] || return 0
  log "installing $crate $version into $CACHE_DIR/tools (once)"
  CARGO_TARGET_DIR="$CACHE_DIR/tools-build" cargo install "$crate" --version "$version" --locked \
    --debug --config profile.dev.debug=false --root "$CACHE_DIR/tools" --force "$@" >&2
}

CARGO_DENY_VERSION="0.20.2"
ensure_deny() { ensure_tool cargo-deny "cargo-deny $CARGO_DENY_VERSION" cargo-deny "$CARGO_DENY_VERSION"; }

CARGO_FUZZ_VERSION="0.13.2"
ensure_fuzz_tools() { ensure_tool cargo-fuzz "cargo-fuzz $CARGO_FUZZ_VERSION" cargo-fuzz "$CARGO_FUZZ_VERSION"; }

# Long installs and builds run beside the host's build, and overlap what
# keeps a core idle in a build (downloads, installs, a large crate's front
# end, a link).
# `in_background NAME COMMAND...` starts one, with its output in
# $CACHE_DIR/logs/NAME.log; `await_background NAME` waits for it and fails
# with that output when it failed.
declare -A BACKGROUND=()
in_background() { # name command...
  local name="$1"
  shift
  mkdir -p "$CACHE_DIR/logs"
  ("$@") >"$CACHE_DIR/logs/$name.log" 2>&1 &
  BACKGROUND[$name]=$!
}

await_background() { # name
  local name="$1" pid="${BACKGROUND[$1]:-}"
  [ -n "$pid" ] || { log "nothing named $name runs in the background"; return 1; }
  unset "BACKGROUND[$name]"
  if ! wait "$pid"; then
    log "$name failed; its output ($CACHE_DIR/logs/$name.log):"
    tail -n 60 "$CACHE_DIR/logs/$name.log" >&2
    return 1
  fi
  grep -E '^(==>|AUDIT|FUZZ)' "$CACHE_DIR/logs/$name.log" >&2 || true
}

kill_tree() { # pid
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
  kill "$1" 2>/dev/null
}

# mdBook (crates.io) builds the book under docs/; only its search is
# compiled in (no serve or watch: `scripts/book --serve` serves the built
# files), which keeps the one-time install short.
MDBOOK_VERSION="0.5.4"
MDBOOK_BIN="$CACHE_DIR/tools/bin/mdbook"
ensure_book_tools() {
  ensure_tool mdbook "mdbook v$MDBOOK_VERSION" mdbook "$MDBOOK_VERSION" --no-default-features --features search
  export MDBOOK_BIN
}

build_normalizers() {
  log "building the normalizer components (wasm32-wasip2)"
  cargo build --quiet --release --target wasm32-wasip2 --manifest-path normalizers/Cargo.toml >&2
}

# Lays out the example modules as a modules directory (NORMALIZERS_DIR):
# <name>.toml, <name>.wasm and <name>.samples.jsonl.
assemble_modules() { # target dir
  mkdir -p "$1"
  cp normalizers/campus-delivery/normalizer.toml "$1/campus-delivery.toml"
  cp "$WASM_DIR/normalizer_campus_delivery.wasm" "$1/campus-delivery.wasm"
  cp normalizers/campus-delivery/samples.jsonl "$1/campus-delivery.samples.jsonl"
}

# componentize-py (PyPI) for Python modules, in a virtualenv of our own; the
# JavaScript projects install componentize-qjs (npm) themselves.
COMPONENTIZE_PY_VERSION="0.25.1"
GUEST_VENV="$CACHE_DIR/guest-venv"
ensure_guest_tools() {
  command -v node >/dev/null && command -v npm >/dev/null || { log "installing Node.js and npm"; apt_install nodejs npm; }
  if [ "$("$GUEST_VENV/bin/componentize-py" --version 2>/dev/null | awk '{print $2}')" != "$COMPONENTIZE_PY_VERSION" ]; then
    log "installing componentize-py $COMPONENTIZE_PY_VERSION (PyPI) into $GUEST_VENV"
    python3 -m venv "$GUEST_VENV" >&2 || { apt_install python3-venv && python3 -m venv "$GUEST_VENV" >&2; }
    "$GUEST_VENV/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
  fi
}

# Creates a project per language with `notification-host new` (named
# <lang>-dispatch) in $1 and builds each with its own build.sh, as a module
# author would; exports GUEST_PROJECTS_DIR for the tests. A project whose
# files `new` would write again unchanged, for the same toolchains, was
# built by an earlier run and is kept as it is.
build_guest_projects() { # host binary, target dir
  local host="$1" dir="$2" lang stamp
  mkdir -p "$dir"
  for lang in rust python js; do
    rm -rf "$dir/.new-$lang"
    "$host" new "$lang-dispatch" --lang "$lang" --dir "$dir/.new-$lang" >/dev/null
    stamp="$(guest_stamp "$dir/.new-$lang")"
    if [ -f "$dir/$lang/$lang-dispatch.wasm" ] && [ "$(cat "$dir/$lang.built" 2>/dev/null)" = "$stamp" ]; then
      log "the $lang module is as an earlier run built it"
      rm -rf "$dir/.new-$lang"
      continue
    fi
    rm -rf "$dir/$lang" "$dir/$lang.built"
    mv "$dir/.new-$lang" "$dir/$lang"
    log "new $lang module from the registries"
    # A separate target dir: this is somebody else's project.
    (cd "$dir/$lang" && PATH="$GUEST_VENV/bin:$PATH" CARGO_TARGET_DIR="$CACHE_DIR/guest-target" ./build.sh >&2)
    echo "$stamp" >"$dir/$lang.built"
  done
  export GUEST_PROJECTS_DIR="$dir"
}

# What a project's build depends on: the files `new` wrote and the tools.
guest_stamp() { # project dir
  {
    (cd "$1" && find . -type f | LC_ALL=C sort | xargs sha256sum)
    rustc --version
    "$GUEST_VENV/bin/componentize-py" --version
    node --version
  } | sha256sum | cut -d' ' -f1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for_port() { # port, seconds, what
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  log "$3 did not start listening on port $1"; return 1
}

SERVICES_DIR=""
PG_DATA=""
BROKER_PID=""

# Starts PostgreSQL unless DATABASE_URL is already set; exports DATABASE_URL.
start_postgres() {
  if [ -n "${DATABASE_URL:-}" ]; then log "using the given DATABASE_URL"; return 0; fi
  local bin port
  bin="$(pg_bin_dir)"
  [ -n "$SERVICES_DIR" ] || SERVICES_DIR="$(mktemp -d /tmp/notification-host.XXXXXX)"
  chmod 755 "$SERVICES_DIR"
  PG_DATA="$SERVICES_DIR/pg"
  mkdir -p "$PG_DATA"
  [ "$(id -u)" != 0 ] || chown postgres "$PG_DATA"
  port="$(free_port)"
  as_postgres "$bin/initdb" -D "$PG_DATA/data" -U postgres -A trust --no-sync -E UTF8 >"$SERVICES_DIR/initdb.log" 2>&1 \
    || { cat "$SERVICES_DIR/initdb.log" >&2; return 1; }
  # Settings live in the configuration file, so that a test can stop the
  # server and start it again exactly as it was (`pg_ctl -D ... start`).
  cat >>"$PG_DATA/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_DATA'
max_connections = 300
fsync = off
full_page_writes = off
CONF
  # The benchmarks run PostgreSQL as a server would be set up (memory for
  # its buffers, checkpoints spaced by time rather than forced every 1 GB of
  # WAL), so that a checkpoint landing inside one run does not decide a
  # comparison between runs.
  if [ -n "${BENCH_POSTGRES:-}" ]; then
    cat >>"$PG_DATA/data/postgresql.conf" <<CONF
shared_buffers = 2GB
max_wal_size = 16GB
checkpoint_timeout = 30min
CONF
  fi
  as_postgres "$bin/pg_ctl" -D "$PG_DATA/data" -l "$PG_DATA/server.log" -w -t 60 start >/dev/null \
    || { cat "$PG_DATA/server.log" >&2; return 1; }
  export PG_BIN_DIR="$bin" PG_DATA_DIR="$PG_DATA/data" PG_PORT="$port"
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  log "PostgreSQL on 127.0.0.1:$port (data in $PG_DATA/data)"
}

# Starts tansu unless KAFKA_BOOTSTRAP_SERVERS is already set; exports it.
start_broker() {
  if [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then log "using the given KAFKA_BOOTSTRAP_SERVERS"; return 0; fi
  local port
  [ -n "$SERVICES_DIR" ] || SERVICES_DIR="$(mktemp -d /tmp/notification-host.XXXXXX)"
  port="$(free_port)"
  "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$SERVICES_DIR/broker.log" 2>&1 &
  BROKER_PID=$!
  wait_for_port "$port" 30 "the tansu broker" || { cat "$SERVICES_DIR/broker.log" >&2; return 1; }
  export KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$port"
  log "Kafka-protocol broker (tansu) on 127.0.0.1:$port"
}

cleanup() {
  # Runs from an EXIT trap: a service that is already gone must not stop the
  # rest of the cleanup.
  set +e
  local pid
  for pid in "${BACKGROUND[@]}"; do kill_tree "$pid"; done
  if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null; wait "$BROKER_PID" 2>/dev/null; fi
  if [ -n "$PG_DATA" ] && [ -d "$PG_DATA/data" ]; then
    as_postgres "$PG_BIN_DIR/pg_ctl" -D "$PG_DATA/data" -m immediate stop >/dev/null 2>&1
  fi
  if [ -n "$SERVICES_DIR" ] && [ -z "${KEEP_SERVICES_DIR:-}" ]; then rm -rf "$SERVICES_DIR"; fi
  return 0
}
