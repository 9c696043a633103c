# vmtest-timeout: 180
# VFIO on cgroup v2 through a real container runtime. The forwarder, with
# NSM_CGROUP_PATH on the guest's cgroup2 mount, binds a token to a VF at
# kubelet's Allocate (sriov-e2e allocate stands in for kubelet); runc builds
# a container whose devices are exactly the DeviceSpecs that Allocate
# returned and attaches its eBPF device filter to the container's cgroup.
# In the container the VF's /dev/vfio/<group> (and /dev/vfio/vfio, and the
# iommufd cdev when the kernel made one) opens read-write; another VF's
# group node, bind-mounted in but not in the specs, is refused with EPERM
# although it opens on the host. Then the NSM Request with the token gets
# that VF, Close keeps it for the pod, and once pod-resources no longer
# lists the pod the VF is back on igbvf in sysfs.
need_vfs
have_bin sriov-e2e || skip "sriov-e2e is not in the guest"
[ -z "$RUNC_MISSING" ] || skip "$RUNC_MISSING"
have_bin runc || skip "runc is not in the guest"
[ -f /sys/fs/cgroup/cgroup.controllers ] || fail "/sys/fs/cgroup is not a cgroup v2 mount"
sriov-e2e allocate --help 2>&1 | grep -q 'usage: sriov-e2e allocate' ||
  skip "sriov-e2e has no allocate mode"

work=/tmp/runc-vfio
rm -rf "$work"
mkdir -p "$work"
cat > "$work/pci.config" <<CFG
physicalFunctions:
  $PF:
    pfKernelDriver: igb
    vfKernelDriver: igbvf
    capabilities: [1G]
    serviceDomains: [worker.domain]
CFG

other=""
drv=""
# The driver may be gone when it is told to go on: no SIGPIPE for us then.
trap '' PIPE
# Whatever happened, the driver gets its line (so it releases the VF) and the
# other VF goes home, so later checks find every VF on igbvf.
cleanup() {
  if [ -n "$drv" ]; then
    echo go >&4 2>/dev/null
    exec 4>&-
    wait "$drv"
    drv_rc=$?
    drv=""
  fi
  if [ -n "$other" ] && [ "$(driver_of "$other")" != igbvf ]; then
    run forwarder-sriov pci unbind "$other"
    run forwarder-sriov pci restore "$other" igbvf
  fi
  cat "$work/alloc.out"
}
bail() { cleanup; fail "$@"; }

mkfifo "$work/go"
sriov-e2e allocate --forwarder "$(command -v forwarder-sriov)" --config "$work/pci.config" \
  --work "$work/e2e" --resource worker.domain/1G --cgroup-root /sys/fs/cgroup \
  --vfio-path /dev/vfio --cgroup-dir 'vmtest-runc/*' < "$work/go" > "$work/alloc.out" 2>&1 &
drv=$!
exec 4> "$work/go"
ready() { grep -q '^READY' "$work/alloc.out" || ! kill -0 "$drv" 2>/dev/null; }
wait_for 90 ready
grep -q '^READY' "$work/alloc.out" ||
  bail "sriov-e2e allocate gave no device specs: $(grep -E '^FAIL ' "$work/alloc.out" | head -n 1)"

bound=$(sed -n 's/^BOUND vf=\([^ ]*\) group=\([0-9]*\) .*/\1/p' "$work/alloc.out")
group=$(sed -n 's/^BOUND vf=\([^ ]*\) group=\([0-9]*\) .*/\2/p' "$work/alloc.out")
[ "$(driver_of "$bound")" = vfio-pci ] || bail "$bound is on '$(driver_of "$bound")' after Allocate"
[ "$(iommu_group_of "$bound")" = "$group" ] || bail "$bound is not in IOMMU group $group"

# Another VF on vfio-pci: its group node is real and opens on the host, so
# only the container's device filter can refuse it.
i=0
while [ $i -lt "$NUM_VFS" ]; do
  [ "$(vf_bdf $i)" != "$bound" ] && { other=$(vf_bdf $i); break; }
  i=$((i + 1))
done
[ -n "$other" ] || bail "no second VF"
run forwarder-sriov pci bind "$other" vfio-pci || bail "binding $other to vfio-pci failed"
ogroup=$(iommu_group_of "$other")
wait_for 5 test -c "/dev/vfio/$ogroup" || bail "/dev/vfio/$ogroup missing for $other"
( exec 5<>"/dev/vfio/$ogroup" ) || bail "/dev/vfio/$ogroup does not open on the host"

# The bundle: busybox as the rootfs, the specs as devices and allow rules
# (as containerd turns DeviceSpecs into both), everything else denied.
b="$work/bundle"
mkdir -p "$b/rootfs/bin" "$b/rootfs/proc" "$b/rootfs/dev" "$b/rootfs/tmp"
cp /bin/busybox "$b/rootfs/bin/busybox"
ln -s busybox "$b/rootfs/bin/sh"
cat > "$b/rootfs/probe.sh" <<'PROBE'
for n in "$@"; do
  if ( exec 5<>"$n" ) 2>/tmp/err; then
    echo "OPEN-OK $n"
  else
    echo "OPEN-FAIL $n: $(cat /tmp/err)"
  fi
done
PROBE
devices="" rules="" probe="" wanted=""
for line in $(sed -n 's/^DEVICE host=\([^ ]*\) container=\([^ ]*\) permissions=\([a-z]*\)$/\1,\2,\3/p' "$work/alloc.out"); do
  IFS=, read -r host ctr perm <<EOF
$line
EOF
  [ -c "$host" ] || bail "device spec $host is not a character device on the host"
  set -- $(stat -c '%t %T' "$host")
  maj=$((0x$1)) min=$((0x$2))
  devices="$devices${devices:+,}
      {\"path\": \"$ctr\", \"type\": \"c\", \"major\": $maj, \"minor\": $min, \"fileMode\": 384, \"uid\": 0, \"gid\": 0}"
  rules="$rules,
        {\"allow\": true, \"type\": \"c\", \"major\": $maj, \"minor\": $min, \"access\": \"$perm\"}"
  probe="$probe \"$ctr\","
  wanted="$wanted $ctr"
done
[ -n "$devices" ] || bail "no DEVICE lines from sriov-e2e allocate"
case "$wanted " in *" /dev/vfio/$group "*) ;; *) bail "the specs lack /dev/vfio/$group:$wanted" ;; esac
cat > "$b/config.json" <<JSON
{
  "ociVersion": "1.0.2",
  "process": {
    "terminal": false,
    "user": {"uid": 0, "gid": 0},
    "args": ["/bin/sh", "/probe.sh",$probe "/dev/vfio/$ogroup"],
    "env": ["PATH=/bin"],
    "cwd": "/"
  },
  "root": {"path": "rootfs"},
  "hostname": "vmtest-runc",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=1024k"]},
    {"destination": "/dev/vfio/$ogroup", "type": "bind", "source": "/dev/vfio/$ogroup", "options": ["bind"]}
  ],
  "linux": {
    "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}],
    "cgroupsPath": "/vmtest-runc/ctr",
    "devices": [$devices
    ],
    "resources": {
      "devices": [
        {"allow": false, "access": "rwm"}$rules
      ]
    }
  }
}
JSON
cat "$b/config.json"

# The initramfs root cannot be pivot_root'ed away from: --no-pivot.
run runc --root /run/runc run --no-pivot --bundle "$b" vmtest-vfio > "$work/ctr.out" 2>&1
rc=$?
cat "$work/ctr.out"
[ $rc -eq 0 ] || bail "runc run exited $rc: $(tail -n 1 "$work/ctr.out")"
for n in $wanted; do
  grep -q "^OPEN-OK $n\$" "$work/ctr.out" ||
    bail "in the container $n did not open: $(grep " $n" "$work/ctr.out")"
  console "    runc: $n (from our DeviceSpecs) opens read-write in the container"
done
grep -q "^OPEN-FAIL /dev/vfio/$ogroup: .*Operation not permitted" "$work/ctr.out" ||
  bail "another VF's group /dev/vfio/$ogroup was not refused with EPERM: $(grep "/dev/vfio/$ogroup" "$work/ctr.out")"
console "    runc: /dev/vfio/$ogroup (VF $other, not in the specs) refused: EPERM from the device filter"
[ ! -d /sys/fs/cgroup/vmtest-runc/ctr ] || bail "runc left its cgroup behind"

cleanup
grep -E '^(PASS|FAIL) ' "$work/alloc.out" | while read -r l; do console "    allocate: $l"; done
[ "$drv_rc" -eq 0 ] || fail "sriov-e2e allocate: $(grep -c '^FAIL ' "$work/alloc.out") of its checks failed"
[ "$(driver_of "$bound")" = igbvf ] || fail "$bound is on '$(driver_of "$bound")' after the release, want igbvf"
wait_for 10 has_netdev "$bound" || fail "$bound has no netdev after the release"
[ "$(driver_of "$other")" = igbvf ] || fail "$other is on '$(driver_of "$other")', want igbvf"
