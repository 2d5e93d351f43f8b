#!/usr/bin/env bash
# Builds the Debian package (scripts/build-deb.sh) and checks with `dpkg -c` that it
# ships the binaries, the units, the D-Bus policy and activation file, tmpfiles, the
# default config, the man pages and the shell completions.
#
# Usage: bash scripts/check-deb.sh
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

deb=$(bash "$OSM_REPO_ROOT/scripts/build-deb.sh" | tail -n 1)
[ -f "$deb" ] || osm_die "scripts/build-deb.sh did not produce a package (got '$deb')"
listing=$(dpkg -c "$deb")
missing=()
for path in \
    ./usr/sbin/osm-hostd \
    ./usr/bin/osm-hostctl \
    ./usr/lib/osm-host/osm-hostd-host-shutdown \
    ./lib/systemd/system/osm-hostd.service \
    ./lib/systemd/system/osm-hostd-backup.service \
    ./lib/systemd/system/osm-hostd-backup.timer \
    ./usr/share/dbus-1/system.d/uk.co.devtank.OsmHost1.conf \
    ./usr/share/dbus-1/system-services/uk.co.devtank.OsmHost1.service \
    ./usr/lib/tmpfiles.d/osm-host.conf \
    ./usr/lib/sysctl.d/60-osm-host.conf \
    ./etc/osm-host/hostd.toml \
    ./usr/share/man/man1/osm-hostctl.1 \
    ./usr/share/man/man1/osm-hostctl-host-shutdown.1 \
    ./usr/share/bash-completion/completions/osm-hostctl \
    ./usr/share/zsh/vendor-completions/_osm-hostctl \
    ./usr/share/fish/vendor_completions.d/osm-hostctl.fish \
    ./usr/share/osm-host/grafana/osm-host-dashboard.json \
    ./usr/share/osm-host/prometheus/osm-host-alerts.yml; do
    # dpkg -c prints "perms owner size date time path"; man pages may be gzipped.
    if ! grep -Eq "[[:space:]]${path//./\\.}(\.gz)?\$" <<<"$listing"; then
        missing+=("$path")
    fi
done
if [ "${#missing[@]}" -ne 0 ]; then
    printf '%s\n' "$listing" >&2
    osm_die "$deb lacks: ${missing[*]}"
fi
control=$(dpkg-deb -I "$deb")
grep -q "conffiles" <<<"$control" || osm_die "$deb has no conffiles"
grep -q "postinst" <<<"$control" || osm_die "$deb has no postinst"
osm_info "$deb: binaries, units, bus policy and activation, tmpfiles, config, man pages and completions present"
