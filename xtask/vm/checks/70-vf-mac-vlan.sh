# MAC and VLAN set through the PF (the way the forwarder configures a VF)
# are reported by the PF and the MAC is seen on the VF's netdev.
need_vfs
pf=$(pf_netdev)
vf=$(vf_bdf 2)
mac=02:00:5e:10:00:02
run ip link set "$pf" vf 2 mac "$mac" || fail "ip link set $pf vf 2 mac failed"
run ip link set "$pf" vf 2 vlan 100 || fail "ip link set $pf vf 2 vlan 100 failed"
ip link show "$pf" | tee /tmp/pf-vfs.txt
grep -q "vf 2 .*link/ether $mac.*vlan 100" /tmp/pf-vfs.txt ||
  fail "PF does not report vf 2 with mac $mac vlan 100: $(grep 'vf 2 ' /tmp/pf-vfs.txt)"
# igbvf learns a PF-assigned MAC on its next reset: cycle the VF's link.
nd=$(vf_netdev 2)
[ -n "$nd" ] || fail "VF $vf has no netdev"
run ip link set "$nd" up
run ip link set "$nd" down
run ip link set "$nd" up
got=$(cat "/sys/class/net/$nd/address")
[ "$got" = "$mac" ] || fail "VF netdev $nd has MAC $got, want $mac"
