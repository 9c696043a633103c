# A VF moves from igbvf to vfio-pci through our code, and its IOMMU group's
# character device appears.
need_vfs
need_subcommand forwarder-sriov pci bind
vf=$(vf_bdf 0)
run forwarder-sriov pci bind "$vf" vfio-pci || fail "forwarder-sriov pci bind $vf vfio-pci failed"
[ "$(driver_of "$vf")" = vfio-pci ] || fail "$vf is bound to '$(driver_of "$vf")', want vfio-pci"
group=$(iommu_group_of "$vf")
[ -n "$group" ] || fail "$vf has no iommu_group"
wait_for 5 test -c "/dev/vfio/$group" || fail "/dev/vfio/$group missing for $vf"
echo "$vf group $group dev $(stat -c '%t:%T' "/dev/vfio/$group")"
