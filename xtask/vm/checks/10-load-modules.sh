# igb (PF), igbvf (VF netdevs) and vfio-pci load from the guest kernel's own
# modules, with their dependencies.
for m in $GUEST_MODULES; do
  run modprobe "$m" || fail "modprobe $m failed: $(dmesg | tail -n 1)"
done
for m in $GUEST_MODULES; do
  m=$(echo "$m" | tr - _)
  [ -d "/sys/module/$m" ] || fail "/sys/module/$m missing after modprobe"
done
