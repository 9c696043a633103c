# The PF must be up before VFs are created, or igbvf finds the "PF still in
# reset state" and the VF netdevs never get a link.
pf=$(pf_netdev)
run ip link set "$pf" up || fail "ip link set $pf up failed"
run ip addr add "$PF_IP/24" dev "$pf" || fail "ip addr add on $pf failed"
wait_for 10 grep -q 1 "/sys/class/net/$pf/carrier" || fail "$pf has no carrier"
