# A real igbvf netdev moved into a network namespace reaches the PF across
# the 82576's internal switch.
need_vfs
vf=$(vf_bdf 1)
nd=$(vf_netdev 1)
[ -n "$nd" ] || fail "VF $vf has no netdev"
run ip netns add vmtest-ns1 || fail "ip netns add failed"
run ip link set "$nd" netns vmtest-ns1 || fail "moving $nd into vmtest-ns1 failed"
run ip -n vmtest-ns1 addr add "$VF_IP/24" dev "$nd" || fail "addr add in ns failed"
run ip -n vmtest-ns1 link set "$nd" up || fail "link up in ns failed"
if ! wait_for 15 ip netns exec vmtest-ns1 ping -c 1 -W 1 "$PF_IP"; then
  ip -n vmtest-ns1 -s link show "$nd"
  ip -n vmtest-ns1 neigh
  ip -s link show "$(pf_netdev)"
  fail "no reply from $PF_IP to $nd in vmtest-ns1 within 15 s"
fi
run ip netns exec vmtest-ns1 ping -c 3 -i 0.2 -W 1 "$PF_IP" || fail "repeated ping lost packets"
