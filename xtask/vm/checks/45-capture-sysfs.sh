# Copies the subset of this real sysfs that our PCI crate reads into a fake
# tree and sends it to the host as a gzipped tar (the igb-vm fixture). Runs
# right after create-vfs so the fixture shows the plain state: PF up, seven
# VFs on igbvf, each with its netdev in the root namespace.
need_vfs
have_bin sysfs-capture || skip "sysfs-capture is not in the guest (sriov-pci-fake has no such binary yet)"
rm -rf /tmp/capture
mkdir -p /tmp/capture
# vfio-pci is captured too so tests can rebind the fixture VFs to it.
run sysfs-capture --driver vfio-pci /tmp/capture "$PF" || fail "sysfs-capture failed"
[ -n "$(ls /tmp/capture)" ] || fail "sysfs-capture wrote nothing"
console "VMTEST-CAPTURE-BEGIN igb-vm"
tar -C /tmp/capture -czf - . | base64 >&3
console "VMTEST-CAPTURE-END"
# How our PCI crate reads the real tree at the moment of capture; the host
# reads the captured copy through the fake and expects the same table.
if have_bin forwarder-sriov; then
  forwarder-sriov inventory > /tmp/inventory.txt 2>&1 || fail "forwarder-sriov inventory failed: $(tail -n 1 /tmp/inventory.txt)"
  console "VMTEST-FILE-BEGIN igb-vm-inventory.txt"
  base64 < /tmp/inventory.txt >&3
  console "VMTEST-FILE-END"
fi
