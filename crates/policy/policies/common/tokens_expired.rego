# No token on the path may be past its `exp` claim (seconds since the epoch).
# A token without `exp`, or one that cannot be read, counts as expired.
package nsm

import rego.v1

default valid := false

valid if {
	now_s := time.now_ns() / 1000000000
	every segment in input.path_segments {
		[_, claims, _] := io.jwt.decode(segment.token)
		now_s < claims.exp
	}
}
