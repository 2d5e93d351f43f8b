#!/usr/bin/env bash
# Sets up an OSM host from this checkout, on Debian 12 or newer, as root:
#   Debian packages -> release build -> installed binaries, D-Bus policy, sysctl limits,
#   group osm-admin, /etc/osm-host/hostd.toml -> system bus -> osm-hostd running (under
#   systemd when it is PID 1, in the background otherwise) -> Debian bookworm base ->
#   a running demo container -> `osm-hostctl list`.
# Safe to run again: every step checks what is already there, and the daemon is only
# restarted when something it uses changed. Containers keep running across a restart.
#
# Usage: sudo bash scripts/setup.sh [--no-demo]
#   --no-demo   install and start everything, build the base, but create no container
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BUS_NAME=uk.co.devtank.OsmHost1
BUS_PATH=/uk/co/devtank/OsmHost1
BUS_SOCKET=/run/dbus/system_bus_socket
CONFIG=/etc/osm-host/hostd.toml
PIDFILE=/run/osm-hostd.pid
LOGFILE=/var/log/osm-hostd.log
UNIT=osm-hostd.service
UNIT_PATH=/etc/systemd/system/$UNIT
START_TIMEOUT="${OSM_START_TIMEOUT:-30}"
BASE=bookworm
BASE_RECIPE="$OSM_REPO_ROOT/base-images/debian-bookworm.toml"
DEMO=demo

usage() {
    cat <<'EOF'
Usage: sudo bash scripts/setup.sh [--no-demo]

Installs osm-host from this checkout on Debian 12 or newer, starts osm-hostd on the
embedded loop-backed Btrfs store, builds the Debian bookworm base image, and creates and
starts a container named demo. Safe to run again.

  --no-demo   do everything except creating and starting the demo container
EOF
}

want_demo=1

# Set when a file the daemon or the bus reads was replaced, so they are restarted/reloaded.
daemon_changed=0
policy_changed=0

# install_file MODE SRC DST: installs SRC as DST when the content differs; returns 0 when
# it wrote the file, 1 when DST was already the same.
install_file() {
    local mode="$1" src="$2" dst="$3"
    if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
        return 1
    fi
    install -D -m "$mode" "$src" "$dst" || osm_die "could not install $dst"
    osm_info "installed $dst"
    return 0
}

# ---------------------------------------------------------------------------- helpers

bus_up() {
    [ -S "$BUS_SOCKET" ] && timeout 10 dbus-send --system --print-reply --reply-timeout=5000 \
        --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.GetId >/dev/null 2>&1
}

daemon_answers() {
    timeout 10 dbus-send --system --print-reply --reply-timeout=5000 --dest="$BUS_NAME" \
        "$BUS_PATH" org.freedesktop.DBus.Peer.Ping >/dev/null 2>&1
}

# Prints the pid of whoever owns the daemon's bus name, if anyone does.
bus_name_owner_pid() {
    timeout 10 dbus-send --system --print-reply=literal --reply-timeout=5000 \
        --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.GetConnectionUnixProcessID "string:$BUS_NAME" 2>/dev/null |
        awk '{print $NF}' || true
}

# pid_alive PID: the process exists and is not a zombie (an exited child that no one has
# reaped yet still answers kill -0; PID 1 outside systemd may be slow to reap).
pid_alive() {
    local state
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# pid_is PID NAME: PID is a live process whose command name is NAME.
pid_is() {
    [ -n "$1" ] && [ "$1" -gt 1 ] 2>/dev/null && pid_alive "$1" &&
        [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

is_osm_hostd() { pid_is "$1" osm-hostd; }

# The osm-hostd this script (or anyone) started outside systemd, if one runs.
background_daemon_pid() {
    local pid=""
    if [ -f "$PIDFILE" ]; then
        pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    fi
    if ! is_osm_hostd "$pid"; then
        pid="$(bus_name_owner_pid)"
    fi
    if is_osm_hostd "$pid"; then
        printf '%s\n' "$pid"
    fi
}

show_daemon_log() {
    if osm_have_systemd; then
        systemctl status --no-pager "$UNIT" >&2 || true
        journalctl -u "$UNIT" -n 60 --no-pager >&2 || true
    elif [ -f "$LOGFILE" ]; then
        printf -- '--- last lines of %s ---\n' "$LOGFILE" >&2
        tail -n 60 "$LOGFILE" >&2
    fi
}

# config_value KEY DEFAULT: a string key of the config (KEY names are unique across its
# tables, so no TOML parser is needed for the two read here), else DEFAULT.
config_value() {
    local v
    v="$(sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"\([^\"]*\)\".*/\1/p" "$CONFIG" 2>/dev/null | head -n1)"
    printf '%s\n' "${v:-$2}"
}

# -------------------------------------------------------------------------------- steps

step_packages() {
    osm_step "Debian packages"
    osm_install_packages
    osm_load_modules
}

step_build() {
    osm_step "Build (cargo build --release)"
    osm_find_cargo
    osm_check_rust_version
    local lock_args=()
    mapfile -t lock_args < <(osm_cargo_lock_args)
    (cd "$OSM_REPO_ROOT" && cargo build --release "${lock_args[@]}")
}

step_install() {
    osm_step "Install"
    local release="$OSM_REPO_ROOT/target/release" f
    install_file 0755 "$release/osm-hostd" /usr/sbin/osm-hostd && daemon_changed=1
    install_file 0755 "$release/osm-hostctl" /usr/bin/osm-hostctl || true
    # The unit's ExecStop: stops containers only when the host goes down.
    install_file 0755 "$OSM_REPO_ROOT/packaging/libexec/osm-hostd-host-shutdown" \
        /usr/lib/osm-host/osm-hostd-host-shutdown || true

    install_file 0644 "$OSM_REPO_ROOT/packaging/dbus/$BUS_NAME.conf" \
        "/usr/share/dbus-1/system.d/$BUS_NAME.conf" && policy_changed=1

    for f in "$OSM_REPO_ROOT"/packaging/sysctl.d/*.conf; do
        install_file 0644 "$f" "/etc/sysctl.d/$(basename "$f")" || true
        osm_apply_sysctl_file "/etc/sysctl.d/$(basename "$f")"
    done

    install_file 0644 "$OSM_REPO_ROOT/packaging/tmpfiles.d/osm-host.conf" \
        /usr/lib/tmpfiles.d/osm-host.conf || true
    # The directories it lists, with their modes, without needing systemd-tmpfiles.
    local type path mode user group _rest
    while read -r type path mode user group _rest; do
        case "$type" in
        d) install -d -m "$mode" -o "$user" -g "$group" "$path" ;;
        esac
    done < <(grep -v '^[[:space:]]*\(#\|$\)' /usr/lib/tmpfiles.d/osm-host.conf)

    install_file 0644 "$OSM_REPO_ROOT/packaging/hostd.toml" \
        /usr/share/doc/osm-host/examples/hostd.toml || true

    if ! getent group osm-admin >/dev/null; then
        groupadd -r osm-admin
        osm_info "created group osm-admin (its members may change state through osm-hostctl)"
    fi

    if [ ! -e "$CONFIG" ]; then
        install -d -m 0755 "$(dirname "$CONFIG")"
        # The commented template, with the embedded loop-backed store switched on.
        sed -e 's|^# *\(loop_image = \)|\1|' -e 's|^# *\(loop_size = \)|\1|' \
            "$OSM_REPO_ROOT/packaging/hostd.toml" >"$CONFIG.new"
        if ! grep -q '^loop_image = "/var/lib/osm-host/store.img"' "$CONFIG.new" ||
            ! grep -q '^loop_size = "20G"' "$CONFIG.new"; then
            rm -f "$CONFIG.new"
            osm_die "packaging/hostd.toml no longer has the commented loop_image/loop_size lines this script enables"
        fi
        chmod 0644 "$CONFIG.new"
        mv "$CONFIG.new" "$CONFIG"
        daemon_changed=1
        osm_info "wrote $CONFIG (store: 20G loop image /var/lib/osm-host/store.img at /srv/osm-lxc)"
    else
        osm_info "keeping the existing $CONFIG"
    fi
    /usr/sbin/osm-hostd --config "$CONFIG" --check-config ||
        osm_die "$CONFIG is not valid (see above); fix it and run this script again"

    # NGINX includes the fragments osm-hostd writes for published containers.
    install_file 0755 "$OSM_REPO_ROOT/packaging/libexec/osm-host-nginx-setup" \
        /usr/lib/osm-host/osm-host-nginx-setup || true
    /usr/lib/osm-host/osm-host-nginx-setup "$(config_value nginx_conf /etc/nginx/nginx.conf)" \
        "$(config_value nginx_dir /etc/nginx/osm-host)" ||
        osm_warn "NGINX is not wired for published containers (see above); publishing will fail until it is"

    if osm_have_systemd; then
        install_file 0644 "$OSM_REPO_ROOT/packaging/systemd/$UNIT" "$UNIT_PATH" && daemon_changed=1
        systemctl daemon-reload
    fi
}

# Debian's lxc package ships lxc-net, which by default brings up its own lxcbr0 at
# 10.0.3.1 with its own dnsmasq. osm-hostd owns the bridge and its dnsmasq, so a
# lxc-net on the same bridge or address would fight it for the DHCP port.
step_lxc_net() {
    local settings use bridge addr our_bridge our_addr
    settings="$(
        # Runs lxc-net's defaults and its configuration in a subshell, as lxc-net does.
        USE_LXC_BRIDGE=true LXC_BRIDGE=lxcbr0 LXC_ADDR=10.0.3.1
        # shellcheck disable=SC1091
        [ ! -f /etc/default/lxc ] || . /etc/default/lxc >/dev/null 2>&1
        echo "$USE_LXC_BRIDGE $LXC_BRIDGE $LXC_ADDR"
    )"
    read -r use bridge addr <<<"$settings"
    our_bridge="$(config_value bridge lxcbr0)"
    our_addr="$(config_value address 10.0.3.1/24)"
    our_addr="${our_addr%/*}"
    if [ "$use" != true ] || { [ "$bridge" != "$our_bridge" ] && [ "$addr" != "$our_addr" ]; }; then
        return 0
    fi
    if osm_have_systemd; then
        if systemctl is-enabled --quiet lxc-net.service 2>/dev/null ||
            systemctl is-active --quiet lxc-net.service 2>/dev/null; then
            osm_info "stopping and masking lxc-net.service: osm-hostd runs the $our_bridge bridge and its DHCP"
            systemctl stop lxc-net.service || true
            systemctl mask lxc-net.service
        fi
    elif [ -f /run/lxc/network_up ] && [ -x /usr/libexec/lxc/lxc-net ]; then
        osm_info "stopping lxc-net's bridge $bridge: osm-hostd runs the $our_bridge bridge and its DHCP"
        /usr/libexec/lxc/lxc-net stop || osm_warn "lxc-net stop failed"
    fi
    if ! osm_have_systemd && command -v update-rc.d >/dev/null 2>&1 &&
        compgen -G '/etc/rc[2-5].d/S*lxc-net' >/dev/null; then
        update-rc.d lxc-net disable >/dev/null 2>&1 || osm_warn "could not disable lxc-net at boot"
    fi
}

step_bus() {
    osm_step "System bus"
    if bus_up; then
        if [ "$policy_changed" -eq 1 ]; then
            # dbus-daemon usually notices new files itself; reload so it is certain.
            if ! timeout 10 dbus-send --system --print-reply --reply-timeout=5000 \
                --dest=org.freedesktop.DBus /org/freedesktop/DBus \
                org.freedesktop.DBus.ReloadConfig >/dev/null 2>&1; then
                local pid
                pid="$(cat /run/dbus/pid 2>/dev/null || true)"
                if [ -n "$pid" ] && kill -HUP "$pid" 2>/dev/null; then
                    sleep 1
                else
                    osm_warn "could not make the system bus reload its policy"
                fi
            fi
            osm_info "system bus reloaded its configuration"
        else
            osm_info "system bus is running"
        fi
        return 0
    fi

    if osm_have_systemd; then
        systemctl start dbus.service
    else
        mkdir -p /run/dbus
        local pid=""
        pid="$(cat /run/dbus/pid 2>/dev/null || true)"
        if pid_is "$pid" dbus-daemon; then
            osm_die "dbus-daemon (pid $pid) runs but does not answer on $BUS_SOCKET; stop it and run this script again"
        fi
        rm -f /run/dbus/pid
        rm -f "$BUS_SOCKET"
        dbus-uuidgen --ensure
        # No libnss-systemd round trips through the bus it is starting (Debian #940971).
        SYSTEMD_NSS_BYPASS_BUS=1 dbus-daemon --system --fork
    fi
    local i
    for i in $(seq 1 20); do
        bus_up && break
        [ "$i" -lt 20 ] || osm_die "the system bus did not come up on $BUS_SOCKET"
        sleep 0.5
    done
    osm_info "system bus started"
}

stop_background_daemon() {
    local pid="$1" i
    osm_info "stopping osm-hostd (pid $pid); containers keep running"
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 60); do
        pid_alive "$pid" || break
        sleep 0.5
    done
    if pid_alive "$pid"; then
        osm_warn "osm-hostd (pid $pid) did not exit within 30 s of SIGTERM; killing it (it finishes interrupted operations on its next start)"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 1
    fi
    rm -f "$PIDFILE"
}

step_daemon() {
    osm_step "osm-hostd"
    step_lxc_net
    if osm_have_systemd; then
        # A daemon started by hand earlier would keep the bus name from the unit's.
        local stray
        stray="$(background_daemon_pid)"
        if [ -n "$stray" ] && ! systemctl is-active --quiet "$UNIT"; then
            stop_background_daemon "$stray"
        fi
        systemctl enable --quiet "$UNIT"
        if systemctl is-active --quiet "$UNIT" && [ "$daemon_changed" -eq 0 ]; then
            osm_info "$UNIT is running the installed binary"
        else
            # Type=notify: this returns once the daemon holds its bus name (or failed).
            systemctl restart "$UNIT" || {
                show_daemon_log
                osm_die "$UNIT failed to start"
            }
        fi
    else
        local pid
        pid="$(background_daemon_pid)"
        if [ -n "$pid" ] && [ "$daemon_changed" -eq 0 ]; then
            osm_info "osm-hostd (pid $pid) is running the installed binary"
            printf '%s\n' "$pid" >"$PIDFILE"
        else
            [ -z "$pid" ] || stop_background_daemon "$pid"
            install -d -m 0755 "$(dirname "$LOGFILE")"
            printf -- '--- %s: scripts/setup.sh starts osm-hostd\n' "$(date -Is)" >>"$LOGFILE"
            # No systemd here: run it detached from this shell, in its own session.
            setsid /usr/sbin/osm-hostd --config "$CONFIG" >>"$LOGFILE" 2>&1 </dev/null &
            pid=$!
            printf '%s\n' "$pid" >"$PIDFILE"
            osm_info "started osm-hostd (pid $pid, log $LOGFILE)"
        fi
    fi

    local i deadline=$((START_TIMEOUT * 2))
    for ((i = 1; ; i++)); do
        daemon_answers && break
        if ! osm_have_systemd && ! pid_alive "$(cat "$PIDFILE")"; then
            show_daemon_log
            osm_die "osm-hostd exited during start-up (see the log above)"
        fi
        if [ "$i" -ge "$deadline" ]; then
            show_daemon_log
            osm_die "osm-hostd did not answer on the system bus within ${START_TIMEOUT} s"
        fi
        sleep 0.5
    done
    osm_info "osm-hostd answers on the system bus as $BUS_NAME"
}

# ctl ARGS...: osm-hostctl; on exit code 9 (daemon not reachable) says where to look.
# Returns osm-hostctl's exit code.
ctl() {
    local rc=0
    osm-hostctl "$@" || rc=$?
    if [ "$rc" -eq 9 ]; then
        show_daemon_log
        osm_warn "osm-hostd is not reachable (osm-hostctl $*)"
    fi
    return "$rc"
}

# json_has KEY VALUE: reads JSON on stdin; true when some "KEY": "VALUE" is in it.
json_has() {
    grep -Eq "\"$1\"[[:space:]]*:[[:space:]]*\"$2\""
}

step_base() {
    osm_step "Base image '$BASE'"
    local list rc=0
    list="$(ctl base list --json)" || osm_die "osm-hostctl base list failed"
    if json_has name "$BASE" <<<"$list"; then
        osm_info "base image '$BASE' is there"
        return 0
    fi
    [ -f "$BASE_RECIPE" ] || osm_die "recipe $BASE_RECIPE is missing"
    osm_info "building base image '$BASE' with debootstrap (a few minutes the first time; cached afterwards)"
    ctl base build "$BASE" --recipe "$BASE_RECIPE" </dev/null || rc=$?
    case "$rc" in
    0) ;;
    4) osm_info "base image '$BASE' already exists" ;;
    *) osm_die "building base image '$BASE' failed (osm-hostctl exit code $rc)" ;;
    esac
}

step_demo() {
    osm_step "Demo container '$DEMO'"
    local rc=0 info err
    err="$(mktemp)"
    info="$(osm-hostctl info "$DEMO" --json 2>"$err")" || rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
        cat "$err" >&2
        rm -f "$err"
        [ "$rc" -ne 9 ] || show_daemon_log
        osm_die "osm-hostctl info $DEMO failed (exit code $rc)"
    fi
    rm -f "$err"
    if [ "$rc" -eq 3 ]; then
        rc=0
        ctl create "$DEMO" --base "$BASE" --autostart || rc=$?
        case "$rc" in
        0) osm_info "created container '$DEMO' (started at boot: --autostart)" ;;
        4) osm_info "container '$DEMO' already exists" ;;
        *) osm_die "creating container '$DEMO' failed (osm-hostctl exit code $rc)" ;;
        esac
        info="$(ctl info "$DEMO" --json)" || osm_die "osm-hostctl info $DEMO failed"
    else
        osm_info "container '$DEMO' exists"
    fi
    if json_has state running <<<"$info"; then
        osm_info "container '$DEMO' is running"
    else
        ctl start "$DEMO" || osm_die "starting container '$DEMO' failed (osm-hostctl exit code $?)"
        osm_info "started container '$DEMO'"
    fi
}

main() {
    local arg
    for arg in "$@"; do
        case "$arg" in
        --no-demo) want_demo=0 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) osm_die "unknown argument '$arg' (try --help)" ;;
        esac
    done
    osm_require_root
    osm_require_debian
    step_packages
    step_build
    step_install
    step_bus
    step_daemon
    step_base
    if [ "$want_demo" -eq 1 ]; then
        step_demo
    fi
    osm_step "Containers"
    ctl list || osm_die "osm-hostctl list failed"
}

main "$@"
