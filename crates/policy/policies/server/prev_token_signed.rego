# A server trusts the segment before its own only if that segment's token was
# signed by the key of the peer it is talking to: the previous hop must have
# minted the token it presents. `index` is our own segment.
package nsm

import rego.v1

default valid := false

valid if {
	previous := object.get(input, "index", 0) - 1
	previous >= 0
	io.jwt.verify_es256(input.path_segments[previous].token, input.auth_info.certificate)
}
