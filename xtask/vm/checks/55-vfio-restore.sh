# Unbinding through our code and binding igbvf again gives the VF its netdev back.
need_vfs
need_subcommand forwarder-sriov pci unbind
vf=$(vf_bdf 0)
[ "$(driver_of "$vf")" = vfio-pci ] || skip "$vf is not on vfio-pci (see vfio-bind)"
run forwarder-sriov pci unbind "$vf" || fail "forwarder-sriov pci unbind $vf failed"
[ -z "$(driver_of "$vf")" ] || fail "$vf still bound to $(driver_of "$vf") after unbind"
run forwarder-sriov pci bind "$vf" igbvf || fail "forwarder-sriov pci bind $vf igbvf failed"
[ "$(driver_of "$vf")" = igbvf ] || fail "$vf is bound to '$(driver_of "$vf")', want igbvf"
wait_for 10 has_netdev "$vf" || fail "$vf has no netdev after rebinding igbvf"
