# Every token on the path must be a readable JWT (three base64url parts, a
# JSON header and JSON claims). Signatures are the business of
# prev_token_signed / next_token_signed; this rule rejects garbage early.
package nsm

import rego.v1

default valid := false

valid if {
	every segment in input.path_segments {
		io.jwt.decode(segment.token)
	}
}
