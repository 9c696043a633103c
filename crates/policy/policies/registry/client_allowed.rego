# A registration under a name nobody holds yet is allowed; once a name is
# held, only the identity that first registered it (the first of its path
# ids) may refresh or unregister it.
package nsm

import rego.v1

default valid := false

valid if not input.resource_path_ids_map[input.resource_name]

valid if input.resource_path_ids_map[input.resource_name][0] == input.resource_id
