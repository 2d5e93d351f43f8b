#!/usr/bin/env bash
# Runs osm-host's whole test suite, as root, on Debian 12 or newer:
#   Debian packages -> cargo fmt --check -> cargo clippy -D warnings -> cargo build
#   -> the Debian package built and listed (scripts/check-deb.sh; installs cargo-deb
#   once) -> cargo test (unit tests, D-Bus tests, and the root integration tests with
#   real LXC containers on loop-mounted Btrfs; tests/systemd_host.rs installs the package
#   just built, target/debian/osm-host_*.deb, into a test host running systemd)
#   -> systemd-analyze verify of the units.
# Stops at the first failing step with a non-zero exit code. Needs no standard input;
# CI runs it as `bash .ci/run`.
#
# Usage: sudo bash scripts/test.sh
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The root integration tests refuse to run without root (they must fail, never skip),
# and installing packages needs root too: say so before spending minutes on a build.
osm_require_root
osm_require_debian
exec </dev/null

osm_step "Debian packages"
OSM_APT_PACKAGES+=("${OSM_TEST_ONLY_APT_PACKAGES[@]}")
osm_install_packages
osm_load_modules
# The same inotify/keyring limits a host gets, so that tests booting several systemd
# containers do not hit the kernel defaults. Not persisted (nothing is installed).
for f in "$OSM_REPO_ROOT"/packaging/sysctl.d/*.conf; do
    if [ -f "$f" ]; then
        osm_apply_sysctl_file "$f"
    fi
done

osm_step "Rust toolchain"
osm_find_cargo
osm_check_rust_version
for tool in fmt clippy; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        osm_die "cargo $tool is not installed; add it with 'rustup component add rustfmt clippy'"
    fi
done

cd "$OSM_REPO_ROOT"
# A failing test shows where it failed.
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
lock_args=()
mapfile -t lock_args < <(osm_cargo_lock_args)

osm_step "cargo fmt --check"
cargo fmt --all -- --check

osm_step "cargo clippy (warnings are errors)"
cargo clippy "${lock_args[@]}" --workspace --all-targets -- -D warnings

osm_step "cargo build --workspace --all-targets"
cargo build "${lock_args[@]}" --workspace --all-targets

# Before the tests: tests/systemd_host.rs installs this package (it would otherwise
# build it itself, a second release build).
osm_step "Debian package (cargo-deb) and its contents"
bash scripts/check-deb.sh

osm_step "cargo test (unit + root integration tests)"
log="$OSM_REPO_ROOT/target/test-output.log"
set +e
cargo test "${lock_args[@]}" --workspace --no-fail-fast --lib --bins --tests -- --test-threads=2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One total over every test binary, as the last line.
passed=$(awk '/^test result:/ {n += $4} END {print n + 0}' "$log")
failed=$(awk '/^test result:/ {n += $6} END {print n + 0}' "$log")
if [ "$status" -ne 0 ]; then
    echo "cargo test failed (exit $status)"
    echo "$passed passed, $failed failed"
    exit "$status"
fi

osm_step "systemd-analyze verify (packaging/systemd)"
command -v systemd-analyze >/dev/null 2>&1 ||
    osm_die "systemd-analyze is missing; the systemd package should have been installed above"
# The installed programs may be missing on a CI machine: tests/packaging.rs verifies the
# units again in a staging root with every program they run.
verify_out=$(systemd-analyze verify packaging/systemd/*.service packaging/systemd/*.timer 2>&1 || true)
if grep -v 'is not executable: No such file or directory' <<<"$verify_out" | grep -q .; then
    printf '%s\n' "$verify_out" >&2
    osm_die "systemd-analyze verify reported problems"
fi

osm_step "All checks and tests passed"
echo "$passed passed, $failed failed"
