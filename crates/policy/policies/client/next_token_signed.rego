# A client trusts the reply only if the segment after its own carries a token
# signed by the key of the server it called.
package nsm

import rego.v1

default valid := false

valid if {
	following := object.get(input, "index", 0) + 1
	following < count(input.path_segments)
	io.jwt.verify_es256(input.path_segments[following].token, input.auth_info.certificate)
}
