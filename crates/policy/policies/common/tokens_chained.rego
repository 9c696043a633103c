# Each hop's token names the next hop as its audience: for every pair of
# neighbouring segments, the later token's `sub` is one of the earlier
# token's `aud` values. A path of fewer than two segments has no pair to check.
package nsm

import rego.v1

default valid := false

valid if count(input.path_segments) < 2

valid if {
	count(input.path_segments) >= 2
	later := array.slice(input.path_segments, 1, count(input.path_segments))
	every i, segment in later {
		addressed_to(input.path_segments[i].token, segment.token)
	}
}

addressed_to(earlier, later) if {
	[_, from, _] := io.jwt.decode(earlier)
	[_, to, _] := io.jwt.decode(later)
	to.sub in audiences(from)
}

# JWT allows `aud` as one string or as an array of strings.
audiences(claims) := claims.aud if is_array(claims.aud)

audiences(claims) := [claims.aud] if is_string(claims.aud)
