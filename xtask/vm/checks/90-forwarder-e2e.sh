# The forwarder daemon on real VFs, driven by sriov-e2e with the same
# kubelet and NSM-manager stand-ins as the demo: the device plugin
# advertises the VFs, Allocate hands out a token, a KERNEL Request moves a
# real igbvf netdev into a client namespace with its address and the
# client pings the PF across the 82576's switch, Close brings it back, a
# VFIO Request rebinds a VF to vfio-pci and reports /dev/vfio/<group>'s
# real major:minor and a MAC and VLAN set through the PF by our netlink
# code, Close restores igbvf and the VF settings; then the daemon is killed
# with SIGKILL mid-connection and restarted on its state, and a Close, an
# unrefreshed expiry and a vanished client namespace each bring the real
# VF netdev back, and a VFIO Close after a restart rebinds igbvf and
# revokes the device rules, and a pod that goes away has its connection
# closed by the sweep (--restart); SIGTERM unregisters.
need_vfs
have_bin sriov-e2e || skip "sriov-e2e is not in the guest"
pf=$(pf_netdev)
[ -n "$pf" ] || fail "PF $PF has no netdev"
run ip link set "$pf" up
run ip addr add 172.16.1.1/30 dev "$pf" 2>/dev/null || true
cat > /tmp/pci.config <<CFG
physicalFunctions:
  $PF:
    pfKernelDriver: igb
    vfKernelDriver: igbvf
    capabilities: [1G]
    serviceDomains: [worker.domain]
CFG
rm -rf /tmp/e2e
sriov-e2e --forwarder "$(command -v forwarder-sriov)" --sysfs-root /sys \
  --config /tmp/pci.config --work /tmp/e2e --resource worker.domain/1G \
  --vfio --vfio-path /dev/vfio --vf-config --restart --ping 172.16.1.1 > /tmp/e2e.out 2>&1
rc=$?
cat /tmp/e2e.out
grep -E '^(PASS|FAIL) ' /tmp/e2e.out | while read -r line; do console "    e2e: $line"; done
if [ "$rc" -ne 0 ]; then
  tail -n 20 /tmp/e2e/forwarder.log 2>/dev/null
  fail "sriov-e2e: $(grep -c '^FAIL ' /tmp/e2e.out) of its checks failed"
fi
