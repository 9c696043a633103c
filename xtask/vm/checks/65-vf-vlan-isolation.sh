# A port VLAN set through the PF takes effect in the emulated switch: the VF
# in vmtest-ns1 (see vf-netns-ping) loses the untagged PF while tagged with
# VLAN 100, and reaches it again once the VLAN is cleared.
need_vfs
ip netns exec vmtest-ns1 true 2>/dev/null || skip "vmtest-ns1 does not exist (see vf-netns-ping)"
pf=$(pf_netdev)
run ip link set "$pf" vf 1 vlan 100 || fail "ip link set $pf vf 1 vlan 100 failed"
if run ip netns exec vmtest-ns1 ping -c 2 -i 0.3 -W 1 "$PF_IP"; then
  fail "ping across VLAN 100 to the untagged PF succeeded; the VLAN is not enforced"
fi
run ip link set "$pf" vf 1 vlan 0 || fail "ip link set $pf vf 1 vlan 0 failed"
wait_for 10 ip netns exec vmtest-ns1 ping -c 1 -W 1 "$PF_IP" || fail "ping after clearing the VLAN failed"
