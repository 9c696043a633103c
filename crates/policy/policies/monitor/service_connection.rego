# A peer may monitor connections only if at least one connection id it asks
# about was requested by that same peer (its SPIFFE ID owns it).
package nsm

import rego.v1

default valid := false

valid if {
	owned := {id | some id in input.spiffe_id_connection_map[input.service_spiffe_id]}
	asked := {id | some id in input.selector_connection_ids}
	count(owned & asked) > 0
}
