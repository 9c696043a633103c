# Helpers sourced by every check (see init.sh). A check is a plain shell
# script: it passes by exiting 0, calls `fail` or `skip` with a reason
# otherwise. State passes between checks only through the system itself
# (sysfs, netns names), so each check can be read on its own.

# Addresses on the PF's emulated switch.
PF_IP=10.99.0.1
VF_IP=10.99.0.2
NUM_VFS=7

# Debian's busybox-static shell runs its own applets before searching PATH,
# and busybox's `ip` has neither netns nor `vf` support: always use iproute2's.
ip() { /usr/sbin/ip "$@"; }

fail() { echo "$*" > "$VMTEST_REASON"; exit 1; }
skip() { echo "$*" > "$VMTEST_REASON"; exit 77; }
# Prints on the console directly (the check's stdout goes to its log).
console() { echo "$@" >&3; }
# Logs and runs a command; its output lands in the check's log.
run() { echo "+ $*"; "$@"; }

dev() { echo "/sys/bus/pci/devices/$1"; }
pf_netdev() { ls "$(dev "$PF")/net" 2>/dev/null | head -n 1; }
vf_bdf() { basename "$(readlink "$(dev "$PF")/virtfn$1")"; }
vf_netdev() { ls "$(dev "$PF")/virtfn$1/net" 2>/dev/null | head -n 1; }
driver_of() {
  [ -e "$(dev "$1")/driver" ] && basename "$(readlink "$(dev "$1")/driver")"
}
iommu_group_of() { basename "$(readlink "$(dev "$1")/iommu_group")"; }

uptime_s() { cut -d. -f1 /proc/uptime; }

# wait_for SECONDS COMMAND...: retries COMMAND every 0.1 s until it succeeds
# or SECONDS of wall time have passed (slow commands such as ping count too).
wait_for() {
  deadline=$(($(uptime_s) + $1))
  shift
  while :; do
    "$@" >/dev/null 2>&1 && return 0
    [ "$(uptime_s)" -lt "$deadline" ] || return 1
    usleep 100000
  done
}

have_bin() { command -v "$1" >/dev/null 2>&1; }

# need_subcommand BIN ARGS...: skips the check unless `BIN ARGS... --help`
# works, so a check can land before the code it drives.
need_subcommand() {
  have_bin "$1" || skip "$1 is not in the guest (its package is missing)"
  "$@" --help >/dev/null 2>&1 || skip "\`$*\` is not implemented yet"
}

# Skips a check that needs the VFs when the create-vfs check did not make them
# (its own line says why).
need_vfs() {
  [ "$(cat "$(dev "$PF")/sriov_numvfs" 2>/dev/null)" = "$NUM_VFS" ] ||
    skip "the PF has no VFs (see create-vfs)"
}

has_netdev() { [ -n "$(ls "$(dev "$1")/net" 2>/dev/null)" ]; }
