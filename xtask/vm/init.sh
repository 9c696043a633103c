#!/bin/sh
# PID 1 of the vm-test guest (see xtask/src/vm.rs). Mounts the kernel
# filesystems, runs every /vmtest/checks/NN-name.sh in name order and prints
# one PASS/FAIL/SKIP line per check, then powers off. The host parses the
# console; anything that is not a result line is only diagnostics.
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
# cgroup v2 only, as on current nodes: container runtimes attach their eBPF
# device filter here (check vfio-cgroup2-runc).
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# Kernel messages would interleave with result lines on the one console;
# checks read dmesg themselves when they need it.
dmesg -n 1
ip link set lo up

. /vmtest/env
export PF KVER
echo "VMTEST-BEGIN kernel=$KVER binaries=$GUEST_BINARIES"

pass=0 fail=0 skip=0
for f in /vmtest/checks/*.sh; do
  base=$(basename "$f" .sh)
  name=${base#[0-9]*-}
  log=/tmp/check-$name.log
  export VMTEST_REASON=/tmp/check-$name.reason
  rm -f "$VMTEST_REASON"
  start=$(cut -d' ' -f1 /proc/uptime)
  # Each check runs in its own shell with a time limit (60 s, or what its
  # `# vmtest-timeout: SECS` line asks); fd 3 stays on the console for
  # checks that print captures.
  limit=$(sed -n 's/^# vmtest-timeout: *\([0-9][0-9]*\).*/\1/p' "$f" | head -n 1)
  # A run that asks for more (`cargo xtask chaos`'s longer campaign) sets
  # one limit for every check it boots with.
  limit=${VMTEST_CHECK_TIMEOUT:-${limit:-60}}
  timeout -s KILL "$limit" sh -c '. /vmtest/env; . /vmtest/lib.sh; . "$1"' check "$f" 3>&1 >"$log" 2>&1
  rc=$?
  end=$(cut -d' ' -f1 /proc/uptime)
  took=$(awk "BEGIN { printf \"%.1fs\", $end - $start }")
  reason=$(cat "$VMTEST_REASON" 2>/dev/null)
  case $rc in
    0)
      pass=$((pass + 1))
      echo "PASS $name ($took)"
      ;;
    77)
      skip=$((skip + 1))
      echo "SKIP $name: ${reason:-no reason given}"
      ;;
    *)
      fail=$((fail + 1))
      [ $rc -eq 137 ] && reason="killed after ${limit}s; ${reason}"
      [ -n "$reason" ] || reason="exit $rc: $(tail -n 1 "$log")"
      echo "FAIL $name: $reason"
      sed 's/^/    | /' "$log" | tail -n 40
      ;;
  esac
done

if [ $fail -gt 0 ]; then
  echo "--- dmesg (last 30 lines) ---"
  dmesg | tail -n 30 | sed 's/^/    | /'
fi
echo "VMTEST-END pass=$pass fail=$fail skip=$skip"
sync
poweroff -f
