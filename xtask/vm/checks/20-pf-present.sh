# The emulated 82576 is at the expected address, bound to igb, SR-IOV capable.
d=$(dev "$PF")
[ -d "$d" ] || fail "$d does not exist: $(ls /sys/bus/pci/devices | tr '\n' ' ')"
ids="$(cat "$d/vendor"):$(cat "$d/device")"
[ "$ids" = "0x8086:0x10c9" ] || fail "$PF is $ids, want 0x8086:0x10c9 (82576)"
wait_for 10 test -e "$d/driver" || fail "$PF has no driver"
[ "$(driver_of "$PF")" = igb ] || fail "$PF is bound to $(driver_of "$PF"), want igb"
total=$(cat "$d/sriov_totalvfs")
echo "sriov_totalvfs=$total"
# igb caps this at 7 although QEMU's device advertises 8.
[ "$total" = "$NUM_VFS" ] || fail "sriov_totalvfs is $total, want $NUM_VFS"
[ -n "$(pf_netdev)" ] || fail "$PF has no netdev"
