#!/usr/bin/env bash
# Builds the Debian package of osm-host into target/debian/:
#   release build -> man pages and shell completions generated from the CLI definition
#   (target/assets) -> cargo deb.
# Installs cargo-deb with `cargo install --locked` when it is missing (a few minutes,
# once). Prints the path of the .deb on its last line.
#
# Usage: bash scripts/build-deb.sh
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

osm_find_cargo
cd "$OSM_REPO_ROOT"
lock_args=()
mapfile -t lock_args < <(osm_cargo_lock_args)

if ! cargo deb --version >/dev/null 2>&1; then
    osm_step "Installing cargo-deb"
    cargo install cargo-deb --locked
fi

osm_step "Release build"
cargo build --release "${lock_args[@]}" --bins

osm_step "Man pages and shell completions"
rm -rf target/assets
cargo run "${lock_args[@]}" -p osm-hostctl --example gen-assets -- target/assets

osm_step "cargo deb"
deb=$(cargo deb -p osm-hostd --no-build --strip --output target/debian/ | tail -n 1)
osm_info "built $deb"
echo "$deb"
