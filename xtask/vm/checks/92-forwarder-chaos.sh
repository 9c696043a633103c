# vmtest-timeout: 480
# The crash campaign on real VFs (`cargo xtask chaos` runs it on veth
# stand-ins): the failpoints build of the daemon is killed with SIGKILL at
# every point between two host changes and at random instants of KERNEL and
# VFIO Requests (among them after the igbvf netdev moved into the client
# and after the VF was bound to vfio-pci), restarted on its state, and the
# real sysfs and netlink are audited after each fault: igbvf netdevs home
# and down, every VF on igbvf without driver_override, no device rule left,
# the pool's state agreeing; the next hop failing and hanging, kubelet
# restarting, the registry away and back, and a client namespace destroyed
# under a live igbvf VF. Then a soak: 200 KERNEL and 50 VFIO cycles on one
# process, whose open fds, RSS and VFs must be as they were.
# `cargo xtask chaos` boots with CHAOS_ROUNDS=N CHAOS_SOAK=0 for its table.
need_vfs
have_bin sriov-e2e || skip "sriov-e2e is not in the guest"
have_bin forwarder-sriov-failpoints || skip "the failpoints build is not in the guest"
pf=$(pf_netdev)
[ -n "$pf" ] || fail "PF $PF has no netdev"
run ip link set "$pf" up
cat > /tmp/pci-chaos.config <<CFG
physicalFunctions:
  $PF:
    pfKernelDriver: igb
    vfKernelDriver: igbvf
    capabilities: [1G]
    serviceDomains: [worker.domain]
CFG
rm -rf /tmp/chaos
sriov-e2e --forwarder "$(command -v forwarder-sriov-failpoints)" --sysfs-root /sys \
  --config /tmp/pci-chaos.config --work /tmp/chaos --resource worker.domain/1G \
  --vfio --vfio-path /dev/vfio --vf-config --chaos "${CHAOS_ROUNDS:-1}" --soak "${CHAOS_SOAK:-200}" > /tmp/chaos.out 2>&1
rc=$?
cat /tmp/chaos.out
grep -E '^(PASS|FAIL) |^  \| ' /tmp/chaos.out | while read -r line; do console "    chaos: $line"; done
if [ "$rc" -ne 0 ]; then
  tail -n 30 /tmp/chaos/forwarder.log 2>/dev/null
  fail "sriov-e2e --chaos: $(grep -c '^FAIL ' /tmp/chaos.out) of its checks failed"
fi
