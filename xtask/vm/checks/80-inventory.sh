# Our inventory of the real sysfs finds the PF and its seven VFs (the table
# is printed on the console for whoever reads the run).
need_vfs
need_subcommand forwarder-sriov inventory
run forwarder-sriov inventory --json > /tmp/inventory.json || fail "forwarder-sriov inventory --json failed"
cat /tmp/inventory.json
grep -q "$PF" /tmp/inventory.json || fail "inventory does not mention the PF $PF"
i=0
while [ $i -lt "$NUM_VFS" ]; do
  grep -q "$(vf_bdf $i)" /tmp/inventory.json || fail "inventory does not mention VF $(vf_bdf $i)"
  i=$((i + 1))
done
forwarder-sriov inventory 2>&1 | sed 's/^/  /' >&3
