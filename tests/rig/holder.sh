# PID 1 of a test sandbox, run by `unshare --mount --pid --fork --mount-proc
# --propagation private [--net] --kill-child bash <this> STAGE NEW_NET KEEP`.
# It sets the namespaces up, says READY, then lives (and reaps orphans, as an init
# must: LXC monitors daemonize and are re-parented to it) until its stdin closes.
set -eu
stage=$1 new_net=$2 keep=$3

if [ "$new_net" = 1 ]; then
    ip link set lo up
    # LXC looks bridges up in /sys/class/net, which only a sysfs mounted from inside
    # this network namespace shows. A new sysfs hides the host's cgroup hierarchies,
    # so park them first and put them back on top (else LXC fails with "Failed to setup
    # cgroup limits").
    mkdir -p "$stage"
    mount --rbind /sys/fs/cgroup "$stage"
    mount -t sysfs sysfs /sys
    mount --rbind "$stage" /sys/fs/cgroup
    umount --recursive --lazy "$stage"
fi

# LXC's lock dir, private so parallel sandboxes never share locks.
mkdir -p /run/lxc
mount -t tmpfs -o mode=0755 osm-sandbox-run-lxc /run/lxc

echo READY

if [ "$keep" = 1 ]; then
    # OSM_TEST_KEEP: outlive the test process.
    while :; do sleep 3600 & wait $! || true; done
else
    # stdin is a pipe from the test process: EOF means the test dropped us or died.
    # bash reaps re-parented orphans from its SIGCHLD handler while it reads.
    while read -r _; do :; done
fi
