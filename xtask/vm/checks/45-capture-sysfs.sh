# Copies the subset of this real sysfs that our PCI crate reads into a fake
# tree and sends it to the host as a gzipped tar (the igb-vm fixture). Runs
# right after create-vfs so the fixture shows the plain state: PF up, seven
# VFs on igbvf, each with its netdev in the root namespace.
need_vfs
have_bin sysfs-capture || skip "sysfs-capture is not in the guest (sriov-pci-fake has no such binary yet)"
rm -rf /tmp/capture
mkdir -p /tmp/capture
run sysfs-capture /tmp/capture "$PF" || fail "sysfs-capture /tmp/capture $PF failed"
[ -n "$(ls /tmp/capture)" ] || fail "sysfs-capture wrote nothing"
console "VMTEST-CAPTURE-BEGIN igb-vm"
tar -C /tmp/capture -czf - . | base64 >&3
console "VMTEST-CAPTURE-END"
