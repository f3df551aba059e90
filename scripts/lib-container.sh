# Podman on a machine without a Docker engine: installs it when missing,
# makes the base images the Dockerfile names (pulled when a registry answers,
# built locally from Debian's packages when none does) and builds the image.
# Source it after scripts/lib.sh.

IMAGE="${CONTAINER_IMAGE:-localhost/notification-host:latest}"
# The OCI runtime and cgroup manager that work here: crun refuses the
# machine's hybrid cgroup hierarchy, and there is no systemd to manage cgroups.
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
RUST_BASE="rust:1.95-bookworm"
RUNTIME_BASE="debian:bookworm-slim"
# The label every locally made base image carries, with what it was made from.
STANDIN_LABEL="org.notification-host.stand-in"
# Raised whenever the way stand-ins are made changes, so cached ones are remade.
STANDIN_RECIPE=2
STANDARD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

ensure_podman() {
  local pkgs=()
  command -v podman >/dev/null || pkgs+=(podman)
  command -v runc >/dev/null || pkgs+=(runc)
  command -v mmdebstrap >/dev/null || pkgs+=(mmdebstrap)
  [ ${#pkgs[@]} = 0 ] || { log "installing ${pkgs[*]}"; apt_install "${pkgs[@]}"; }
  # The machine's default limits (a hard nofile the container may not raise)
  # make every container start fail; the image's own defaults are fine.
  local conf=/etc/containers/containers.conf
  if ! grep -qs '^ *default_ulimits *= *\[ *\]' "$conf"; then
    log "setting [containers] default_ulimits = [] in $conf"
    mkdir -p /etc/containers
    if grep -qs '^\[containers\]' "$conf"; then
      sed -i 's/^\[containers\]$/[containers]\ndefault_ulimits = []/' "$conf"
    else
      printf '[containers]\ndefault_ulimits = []\n' >>"$conf"
    fi
  fi
}

# Pulls IMAGE from its registry; fails quickly when none answers.
try_pull() { # fully qualified image
  timeout 600 "${PODMAN[@]}" pull -q "$1" >/dev/null 2>&1
}

# A Debian bookworm root made with mmdebstrap from Debian's packages, imported
# as an image. Extra arguments go to mmdebstrap.
import_debian_root() { # tag, description, mmdebstrap args...
  local tag="$1" what="$2" tar
  shift 2
  tar="$(mktemp "${TMPDIR:-/tmp}/standin.XXXXXX.tar")"
  mmdebstrap --quiet --variant=minbase "$@" bookworm "$tar" >&2 \
    || { rm -f "$tar"; log "mmdebstrap failed for $tag"; return 1; }
  "${PODMAN[@]}" import --quiet \
    --change "LABEL $STANDIN_LABEL=\"$what\"" --change "LABEL $STANDIN_LABEL-recipe=$STANDIN_RECIPE" \
    "${IMPORT_CHANGES[@]}" --change 'CMD ["bash"]' "$tar" "$tag" >/dev/null \
    || { rm -f "$tar"; log "podman import failed for $tag"; return 1; }
  rm -f "$tar"
}

# The toolchain this machine has, copied into the builder stand-in the way
# the official rust image lays it out (RUSTUP_HOME=/usr/local/rustup,
# CARGO_HOME=/usr/local/cargo), with the wasm32-wasip2 target, so that the
# Dockerfile's `rustup target add wasm32-wasip2` finds it installed.
rust_standin() { # tag
  local sysroot version toolchain rustup_bin
  sysroot="$(rustc --print sysroot)"
  version="$(rustc --version | awk '{print $2}')"
  case "$version" in 1.95.*) ;; *) log "the machine's rustc is $version, not 1.95: cannot stand in for $RUST_BASE"; return 1 ;; esac
  [ -d "$sysroot/lib/rustlib/wasm32-wasip2" ] || { log "the machine's toolchain lacks wasm32-wasip2"; return 1; }
  rustup_bin="$(command -v rustup)"
  toolchain="$version-x86_64-unknown-linux-gnu"
  # The machine's own certificate authorities (here, the one of the proxy
  # that inspects the way out to crates.io), so that cargo in the builder
  # trusts what cargo on the machine trusts. Only the builder gets them.
  local ca_hooks=() crt
  for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$crt" ] || continue
    ca_hooks+=(--customize-hook="cp '$crt' \"\$1/usr/local/share/ca-certificates/\"")
  done
  [ ${#ca_hooks[@]} = 0 ] || ca_hooks+=(--customize-hook='chroot "$1" update-ca-certificates >/dev/null')
  # The tools the official image's base (buildpack-deps) carries for builds;
  # libssl-dev and the like are left out, as the Dockerfile installs them.
  # One variable per --change: podman import takes the rest of the line as one value.
  local IMPORT_CHANGES=(--change "ENV RUSTUP_HOME=/usr/local/rustup" --change "ENV CARGO_HOME=/usr/local/cargo"
    --change "ENV RUST_VERSION=$version"
    --change "ENV PATH=/usr/local/cargo/bin:$STANDARD_PATH")
  import_debian_root "$1" "rustc $version from the build machine on Debian bookworm" \
    --include=ca-certificates,curl,wget,gnupg,git,gcc,g++,make,libc6-dev,dpkg-dev,patch,perl,python3,file,xz-utils,bzip2,unzip,procps,autoconf,automake,libtool,netbase \
    --customize-hook="mkdir -p \"\$1/usr/local/rustup/toolchains/$toolchain\" \"\$1/usr/local/cargo/bin\"" \
    --customize-hook="tar -C '$sysroot' --exclude=./share/doc -cf - . | tar -C \"\$1/usr/local/rustup/toolchains/$toolchain\" -xf -" \
    --customize-hook="cp '$rustup_bin' \"\$1/usr/local/cargo/bin/rustup\"" \
    --customize-hook="for p in cargo rustc rustdoc rust-gdb rust-lldb cargo-clippy clippy-driver rustfmt cargo-fmt; do ln -s rustup \"\$1/usr/local/cargo/bin/\$p\"; done" \
    --customize-hook="printf 'version = \"12\"\\ndefault_toolchain = \"$toolchain\"\\nprofile = \"minimal\"\\nauto_self_update = \"disable\"\\n' >\"\$1/usr/local/rustup/settings.toml\"" \
    "${ca_hooks[@]}"
}

runtime_standin() { # tag
  local IMPORT_CHANGES=(--change "ENV PATH=$STANDARD_PATH")
  import_debian_root "$1" "Debian bookworm minbase from Debian's packages"
}

# Makes sure the base image exists: the real one when a registry answers, a
# local stand-in otherwise. Prints which.
ensure_base() { # short name (as in the Dockerfile), stand-in function
  local name="$1" make="$2" standin
  if "${PODMAN[@]}" image exists "docker.io/library/$name"; then
    echo "$name: the registry's image (cached)"; return 0
  fi
  standin="localhost/$name"
  if [ -z "${CONTAINER_REFRESH_BASES:-}" ] && "${PODMAN[@]}" image exists "$standin" \
    && [ "$("${PODMAN[@]}" image inspect --format "{{index .Labels \"$STANDIN_LABEL-recipe\"}}" "$standin")" = "$STANDIN_RECIPE" ]; then
    echo "$name: local stand-in (cached: $("${PODMAN[@]}" image inspect --format "{{index .Labels \"$STANDIN_LABEL\"}}" "$standin"))"
    return 0
  fi
  if try_pull "docker.io/library/$name"; then
    "${PODMAN[@]}" rmi -f "$standin" >/dev/null 2>&1 || true
    echo "$name: pulled from its registry"; return 0
  fi
  log "no registry answers for $name: making a local stand-in (once; about 2 to 4 minutes)"
  local t0=$SECONDS
  "$make" "$standin"
  echo "$name: local stand-in made in $((SECONDS - t0)) s ($("${PODMAN[@]}" image inspect --format "{{index .Labels \"$STANDIN_LABEL\"}}" "$standin"))"
}

ensure_bases() {
  ensure_base "$RUST_BASE" rust_standin
  ensure_base "$RUNTIME_BASE" runtime_standin
}

# Builds the image from the Dockerfile as it is; prints the time it took.
build_image() {
  local t0=$SECONDS
  log "podman build -t $IMAGE . (a release build inside the builder: long when the sources changed)"
  # Docker's image format: OCI's has no HEALTHCHECK, and podman would drop it.
  "${PODMAN[@]}" build --format docker --network host --pull=never --layers -t "$IMAGE" -f Dockerfile . \
    >"$CONTAINER_LOG_DIR/build.log" 2>&1 \
    || { tail -40 "$CONTAINER_LOG_DIR/build.log" >&2; log "podman build failed (full log: $CONTAINER_LOG_DIR/build.log)"; return 1; }
  BUILD_SECONDS=$((SECONDS - t0))
  echo "image built in ${BUILD_SECONDS} s"
}
