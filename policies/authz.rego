# The gateway's example OPA policy, written for opa-envoy-plugin: it runs unchanged in a real
# opa-envoy-plugin (decision path envoy/authz/allow), on an OPA server (the gateway's opa.url) and
# in the gateway's own engine (opa.file).
#
# Group `engineering` may POST chat completions; every other request gets 403 with this policy's
# own body, in the OpenAI error shape.
#
# The caller's groups come from verified JWT claims, never from anything a client can set:
#   1. claims already verified upstream of the policy, where Envoy's jwt_authn filter puts them
#      (payload_in_metadata: jwt_payload); the gateway's jwtAuth puts its verified claims there;
#   2. otherwise the bearer token, verified here with io.jwt.decode_verify against the constraints
#      in data.llm_gateway.jwt, e.g. {"cert": "<the JWKS as a JSON string>", "iss": "https://..."}.
#      OPA implements io.jwt.decode_verify; the gateway's in-process engine (regorus) does not (it
#      is always undefined there), so in process only 1 applies and an unverified token gets nothing.
# Groups are Keycloak's `groups` claim (with or without the leading "/" of full group paths) and
# `realm_access.roles`.
package envoy.authz

import rego.v1

http := input.attributes.request.http

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"content-type": "application/json"},
	"body": `{"error":{"message":"This route's policy lets only the engineering group use chat completions.","type":"permission_error","code":"forbidden_by_policy"}}`,
}

allow := {"allowed": true, "dynamic_metadata": {"policy": "envoy.authz", "group": "engineering"}} if {
	chat_completion
	"engineering" in groups
}

chat_completion if {
	http.method == "POST"
	n := count(input.parsed_path)
	n >= 2
	input.parsed_path[n - 2] == "chat"
	input.parsed_path[n - 1] == "completions"
}

claims := verified if {
	verified := input.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].jwt_payload
} else := payload if {
	[scheme, token] := split(http.headers.authorization, " ")
	lower(scheme) == "bearer"
	[valid, _, payload] := io.jwt.decode_verify(token, data.llm_gateway.jwt)
	valid
}

groups contains trim_prefix(g, "/") if {
	some g in claims.groups
}

groups contains role if {
	some role in claims.realm_access.roles
}
