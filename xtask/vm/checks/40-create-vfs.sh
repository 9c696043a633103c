# VFs are created through our code (`forwarder-sriov pci set-numvfs`), and
# igbvf picks each one up as a netdev.
need_subcommand forwarder-sriov pci set-numvfs
run forwarder-sriov pci set-numvfs "$PF" "$NUM_VFS" || fail "forwarder-sriov pci set-numvfs $PF $NUM_VFS failed"
n=$(cat "$(dev "$PF")/sriov_numvfs")
[ "$n" = "$NUM_VFS" ] || fail "sriov_numvfs is $n after set-numvfs, want $NUM_VFS"
i=0
while [ $i -lt "$NUM_VFS" ]; do
  [ -e "$(dev "$PF")/virtfn$i" ] || fail "virtfn$i missing"
  vf=$(vf_bdf $i)
  ids="$(cat "$(dev "$vf")/vendor"):$(cat "$(dev "$vf")/device")"
  [ "$ids" = "0x8086:0x10ca" ] || fail "VF $vf is $ids, want 0x8086:0x10ca"
  wait_for 10 has_netdev "$vf" ||
    fail "VF $vf (virtfn$i) has no netdev; driver: $(driver_of "$vf")"
  [ "$(driver_of "$vf")" = igbvf ] || fail "VF $vf is bound to $(driver_of "$vf"), want igbvf"
  echo "virtfn$i $vf $(vf_netdev $i)"
  i=$((i + 1))
done
