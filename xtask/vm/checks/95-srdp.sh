# The standalone device plugin on real VFs: a sample SRDP config selecting
# the 82576's VFs by vendor, device and driver advertises all of them to
# the kubelet stand-in, and Allocate returns SRDP's PCIDEVICE_* env; the
# vfio-pci pool, empty, is not registered with kubelet (as SRDP).
need_vfs
have_bin sriov-device-plugin || skip "sriov-device-plugin is not in the guest"
have_bin sriov-e2e || skip "sriov-e2e is not in the guest"
cat > /tmp/srdp.json <<'CFG'
{"resourceList": [
  {"resourceName": "igb_vfs",
   "selectors": {"vendors": ["8086"], "devices": ["10ca"], "drivers": ["igbvf"]}},
  {"resourceName": "igb_dpdk",
   "selectors": {"vendors": ["8086"], "devices": ["10ca"], "drivers": ["vfio-pci"]}}
]}
CFG
rm -rf /tmp/srdp
sriov-e2e srdp --plugin "$(command -v sriov-device-plugin)" --config /tmp/srdp.json \
  --sysfs-root /sys --work /tmp/srdp \
  --expect "intel.com/igb_vfs=$NUM_VFS" --expect intel.com/igb_dpdk=0 > /tmp/srdp.out 2>&1
rc=$?
cat /tmp/srdp.out
grep -E '^(PASS|FAIL) ' /tmp/srdp.out | while read -r line; do console "    srdp: $line"; done
if [ "$rc" -ne 0 ]; then
  tail -n 20 /tmp/srdp/sriov-device-plugin.log 2>/dev/null
  fail "sriov-e2e srdp: $(grep -c '^FAIL ' /tmp/srdp.out) of its checks failed"
fi
