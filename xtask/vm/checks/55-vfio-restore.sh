# Our unbind leaves the VF driverless, and our restore gives it back to igbvf
# with driver_override cleared, and the VF's netdev returns.
need_vfs
need_subcommand forwarder-sriov pci unbind
need_subcommand forwarder-sriov pci restore
vf=$(vf_bdf 0)
[ "$(driver_of "$vf")" = vfio-pci ] || skip "$vf is not on vfio-pci (see vfio-bind)"
run forwarder-sriov pci unbind "$vf" || fail "forwarder-sriov pci unbind $vf failed"
[ -z "$(driver_of "$vf")" ] || fail "$vf still bound to $(driver_of "$vf") after unbind"
run forwarder-sriov pci restore "$vf" igbvf || fail "forwarder-sriov pci restore $vf igbvf failed"
[ "$(driver_of "$vf")" = igbvf ] || fail "$vf is bound to '$(driver_of "$vf")', want igbvf"
override=$(cat "$(dev "$vf")/driver_override")
[ "$override" = "(null)" ] || fail "driver_override of $vf is '$override' after restore, want (null)"
wait_for 10 has_netdev "$vf" || fail "$vf has no netdev after restoring igbvf"
