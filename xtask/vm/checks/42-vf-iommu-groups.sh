# Behind the emulated intel-iommu every VF sits in an IOMMU group of its own,
# which is what lets one VF go to vfio-pci (and a pod) while its siblings stay
# on igbvf.
need_vfs
seen=" $(iommu_group_of "$PF") "
i=0
while [ $i -lt "$NUM_VFS" ]; do
  vf=$(vf_bdf $i)
  g=$(iommu_group_of "$vf")
  [ -n "$g" ] || fail "VF $vf has no iommu_group"
  case "$seen" in *" $g "*) fail "VF $vf shares IOMMU group $g" ;; esac
  members=$(ls "/sys/kernel/iommu_groups/$g/devices")
  [ "$members" = "$vf" ] || fail "IOMMU group $g holds '$members', want only $vf"
  seen="$seen$g "
  i=$((i + 1))
done
echo "groups:$seen"
