# Device health on real VFs, event-driven: the standalone plugin (following netlink links and
# kernel uevents) reports a VF Unhealthy in ListAndWatch once its igbvf driver is unbound and
# Healthy once rebound; every VF Unhealthy while the PF is down, Healthy once it is up again.
# sriov-e2e leaves the driver bound and the PF up as it found them.
need_vfs
have_bin sriov-device-plugin || skip "sriov-device-plugin is not in the guest"
have_bin sriov-e2e || skip "sriov-e2e is not in the guest"
pf=$(pf_netdev)
[ -n "$pf" ] || fail "the PF has no netdev"
cat > /tmp/srdp-health.json <<'CFG'
{"resourceList": [
  {"resourceName": "igb_vfs",
   "selectors": {"vendors": ["8086"], "devices": ["10ca"], "drivers": ["igbvf"]}}
]}
CFG
rm -rf /tmp/srdp-health
sriov-e2e srdp --plugin "$(command -v sriov-device-plugin)" --config /tmp/srdp-health.json \
  --sysfs-root /sys --work /tmp/srdp-health \
  --expect "intel.com/igb_vfs=$NUM_VFS" --health "$pf" > /tmp/srdp-health.out 2>&1
rc=$?
cat /tmp/srdp-health.out
grep -E '^(PASS|FAIL) ' /tmp/srdp-health.out | while read -r line; do console "    srdp-health: $line"; done
ip link set "$pf" up
if [ "$rc" -ne 0 ]; then
  tail -n 20 /tmp/srdp-health/sriov-device-plugin.log 2>/dev/null
  fail "sriov-e2e srdp --health: $(grep -c '^FAIL ' /tmp/srdp-health.out) of its checks failed"
fi
