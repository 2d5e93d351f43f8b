# shellcheck shell=bash
# Shared by scripts/setup.sh and scripts/test.sh: the Debian packages osm-host needs,
# their installation, the Rust toolchain lookup, and small output helpers.
# Source it from a script that has `set -euo pipefail`; it defines functions and
# variables only.

OSM_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# What osm-hostd drives at run time, what the root integration tests use, and what the
# build links against. `--no-install-recommends` is used, so everything needed is named.
OSM_APT_PACKAGES=(
    # run time: containers, store, network, bus, base images, snapshots
    lxc
    btrfs-progs
    dnsmasq-base
    rsync
    openssh-client
    dbus
    debootstrap
    debian-archive-keyring
    snapper
    busybox-static
    # run time: published vhosts and TLS streams (osm-hostctl publish, customer add)
    nginx
    libnginx-mod-stream
    # tests: sshd in a test namespace stands in for the backup host
    openssh-server
    nftables
    iproute2
    zstd
    util-linux
    tar
    procps
    # build: cargo links with gcc against libc, and fetches crates over TLS
    pkg-config
    gcc
    libc6-dev
    ca-certificates
    # build: the libbtrfsutil crate (0.7.1) generates its bindings with bindgen (clang,
    # libclang) against the C library's header, found through pkg-config
    libbtrfsutil-dev
    clang
    libclang-dev
    # run time: the C library osm-hostd links for subvolume operations
    libbtrfsutil1
    # tests: systemd-analyze verify of the units. Installing the package on a host whose
    # PID 1 is not systemd changes nothing there (systemd-sysv is what makes it init).
    systemd
)

# Installed by scripts/test.sh only: tools the tests drive that a host must not get
# (prometheus would start a Prometheus server on it).
OSM_TEST_ONLY_APT_PACKAGES=(
    # a UDP/ICMPv6 sender and listener in containers' and the host's namespaces
    # (isolation_net), where busybox has none
    python3-minimal
    # MQTT publish/subscribe from the host to a container on the mqtt layer (layers)
    mosquitto-clients
    # `promtool check metrics|rules` of /metrics and the shipped alert rules. About 96 MB
    # installed, but the only Debian package with promtool; the tests use only that.
    prometheus
)

osm_info() { printf '%s\n' "$*"; }
osm_warn() { printf 'warning: %s\n' "$*" >&2; }
osm_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# A banner per step, so a long CI log shows where it is and what failed.
osm_step() {
    printf '\n==================== %s ====================\n' "$*"
}

osm_require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        osm_die "this must run as root (it installs packages and runs root-only tests): sudo bash $0"
    fi
}

osm_require_debian() {
    if [ ! -r /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; then
        osm_die "osm-host supports Debian 12 (bookworm) or newer; no apt-get / /etc/debian_version here"
    fi
}

osm_have_systemd() { [ -d /run/systemd/system ]; }

# Prints the packages of OSM_APT_PACKAGES that are not fully installed, one per line.
osm_missing_packages() {
    local pkg status
    for pkg in "${OSM_APT_PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
        if [ "$status" != "installed" ]; then
            printf '%s\n' "$pkg"
        fi
    done
}

# Installs whatever is missing; does nothing (and no `apt-get update`) when all is there.
osm_install_packages() {
    local missing=() try
    mapfile -t missing < <(osm_missing_packages)
    if [ "${#missing[@]}" -eq 0 ]; then
        osm_info "all ${#OSM_APT_PACKAGES[@]} Debian packages are installed"
        return 0
    fi
    osm_info "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Retried: a mirror hiccup on a fresh CI machine should not fail the run.
    for try in 1 2 3; do
        if apt-get -o DPkg::Lock::Timeout=300 update; then
            break
        fi
        [ "$try" -lt 3 ] || osm_die "apt-get update failed 3 times"
        sleep 5
    done
    apt-get -o DPkg::Lock::Timeout=300 \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        install -y --no-install-recommends "${missing[@]}" </dev/null
    mapfile -t missing < <(osm_missing_packages)
    if [ "${#missing[@]}" -ne 0 ]; then
        osm_die "still not installed after apt-get install: ${missing[*]}"
    fi
}

# The kernel features the store and the containers use; built in on some kernels.
osm_load_modules() {
    local fs
    for fs in btrfs overlay; do
        if ! grep -qw "$fs" /proc/filesystems && command -v modprobe >/dev/null 2>&1; then
            modprobe "$fs" 2>/dev/null || osm_warn "could not load kernel module $fs"
        fi
    done
    if [ ! -e /dev/loop-control ] && command -v modprobe >/dev/null 2>&1; then
        modprobe loop 2>/dev/null || osm_warn "could not load kernel module loop"
    fi
}

# Puts a working cargo on PATH. `sudo` resets PATH, so look where rustup installs it:
# $CARGO_HOME, root's home, and the home of the user who ran sudo; and point rustup at
# the toolchains installed beside that cargo when its own default does not exist.
osm_find_cargo() {
    local dir sudo_home="" parent
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -n "${SUDO_USER:-}" ] && [ "${SUDO_USER}" != root ]; then
            sudo_home="$(getent passwd "$SUDO_USER" | cut -d: -f6 || true)"
        fi
        for dir in "${CARGO_HOME:+$CARGO_HOME/bin}" "${HOME:+$HOME/.cargo/bin}" /root/.cargo/bin \
            "${sudo_home:+$sudo_home/.cargo/bin}"; do
            if [ -n "$dir" ] && [ -x "$dir/cargo" ]; then
                export PATH="$dir:$PATH"
                break
            fi
        done
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        osm_die "cargo (the Rust toolchain) was not found on PATH nor in ~/.cargo/bin.
  Install it as root with rustup (https://rustup.rs):
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
  then run this script again. Debian's own 'cargo' package is older than the
  rust-version in Cargo.toml."
    fi
    if ! cargo --version >/dev/null 2>&1 && [ -z "${RUSTUP_HOME:-}" ]; then
        # A rustup proxy whose toolchains live beside it (~/.rustup, or /usr/local/rustup).
        parent="$(dirname "$(dirname "$(command -v cargo)")")"
        for dir in "$parent/.rustup" "$(dirname "$parent")/.rustup" "$(dirname "$parent")/rustup"; do
            if [ -d "$dir/toolchains" ]; then
                export RUSTUP_HOME="$dir"
                break
            fi
        done
    fi
    if ! cargo --version >/dev/null 2>&1; then
        cargo --version >&2 || true
        osm_die "$(command -v cargo) does not run (see above); with rustup, set RUSTUP_HOME or run 'rustup default stable'"
    fi
    osm_info "using $(command -v cargo) ($(cargo --version))"
}

# Fails when rustc is older than Cargo.toml's rust-version, with what to do about it.
osm_check_rust_version() {
    local want have
    want="$(sed -n 's/^rust-version[[:space:]]*=[[:space:]]*"\([0-9.]*\)".*/\1/p' "$OSM_REPO_ROOT/Cargo.toml" | head -n1)"
    [ -n "$want" ] || return 0
    have="$(rustc --version | awk '{print $2}')"
    have="${have%%-*}"
    if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1)" != "$want" ]; then
        osm_die "rustc $have is older than the rust-version $want that Cargo.toml needs; run 'rustup update'"
    fi
}

# `--locked` when the lock file is there, so a build never quietly changes dependencies.
osm_cargo_lock_args() {
    if [ -f "$OSM_REPO_ROOT/Cargo.lock" ]; then
        printf '%s\n' --locked
    fi
}

# Applies one sysctl.d file. Fails softly: inside a container /proc/sys is often read-only.
osm_apply_sysctl_file() {
    local file="$1"
    if ! sysctl -q -p "$file" >/dev/null 2>&1; then
        osm_warn "could not apply $(basename "$file") (read-only /proc/sys in a container?); the limits stay as they are"
    fi
}
