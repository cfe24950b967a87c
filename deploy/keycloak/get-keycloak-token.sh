#!/usr/bin/env bash
# Prints an access token for a user of the mcp-realm (the OAuth2 password grant, as the seed's
# get-keycloak-token.sh does), for calling the gateway:
#
#   TOKEN=$(deploy/keycloak/get-keycloak-token.sh)            # alice (group engineering)
#   TOKEN=$(deploy/keycloak/get-keycloak-token.sh bob bob)    # bob (group marketing)
#   curl -H "Authorization: Bearer $TOKEN" http://localhost:3000/sso/v1/chat/completions ...
#
# Keycloak from docker-compose.yaml (`--profile infra`) answers on localhost:8081; override with
# KEYCLOAK_URL, REALM, CLIENT_ID and CLIENT_SECRET.
set -euo pipefail

USERNAME="${1:-alice}"
PASSWORD="${2:-alice}"
KEYCLOAK_URL="${KEYCLOAK_URL:-http://localhost:8081}"
REALM="${REALM:-mcp-realm}"
CLIENT_ID="${CLIENT_ID:-openweb-ui}"
CLIENT_SECRET="${CLIENT_SECRET:-changeme}"

response=$(curl -sS --fail-with-body -X POST \
  "${KEYCLOAK_URL}/realms/${REALM}/protocol/openid-connect/token" \
  -H "Content-Type: application/x-www-form-urlencoded" \
  --data-urlencode "grant_type=password" \
  --data-urlencode "client_id=${CLIENT_ID}" \
  --data-urlencode "client_secret=${CLIENT_SECRET}" \
  --data-urlencode "username=${USERNAME}" \
  --data-urlencode "password=${PASSWORD}" \
  --data-urlencode "scope=openid") || {
  echo "token request failed: ${response:-no answer from ${KEYCLOAK_URL}}" >&2
  exit 1
}

# python3 rather than jq: one less tool to install.
printf '%s' "$response" | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
