# vmtest-timeout: 240
# DRA mode on real VFs (issue #19): `sriov-device-plugin dra` against sriov-e2e's stand-ins for
# kubelet and the API server publishes every igbvf VF as a device of this node's ResourceSlices,
# prepares a claim asking vfio-pci (the VF on vfio-pci, a CDI spec whose /dev/vfio/<group>
# node exists in the guest), survives a kill between prepare and unprepare, and unprepare
# puts the VF back on igbvf. sriov-e2e checks each step; the VFs end on igbvf as found.
need_vfs
have_bin sriov-device-plugin || skip "sriov-device-plugin is not in the guest"
have_bin sriov-e2e || skip "sriov-e2e is not in the guest"
[ -e /dev/vfio/vfio ] || modprobe vfio-pci 2>/dev/null
cat > /tmp/dra.json <<'CFG'
{"resourceList": [
  {"resourceName": "igb_vfs",
   "selectors": {"vendors": ["8086"], "devices": ["10ca"], "drivers": ["igbvf"]}}
]}
CFG
rm -rf /tmp/dra
# Each PASS/FAIL line reaches the console as it comes, so a hang shows where it stopped.
{ sriov-e2e dra --plugin "$(command -v sriov-device-plugin)" --config /tmp/dra.json \
    --sysfs-root /sys --work /tmp/dra --expect "$NUM_VFS" --check-dev-nodes 2>&1
  echo "$?" > /tmp/dra.rc; } | while read -r line; do
  echo "$line" >> /tmp/dra.out
  case "$line" in PASS*|FAIL*) console "    dra: $line" ;; esac
done
rc=$(cat /tmp/dra.rc)
cat /tmp/dra.out
if [ "$rc" -ne 0 ]; then
  tail -n 30 /tmp/dra/sriov-device-plugin-dra.*.log 2>/dev/null
  fail "sriov-e2e dra: $(grep -c '^FAIL ' /tmp/dra.out) of its checks failed"
fi
