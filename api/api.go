// Package api holds DocuVault's HTTP API contract: the OpenAPI 3.0
// description of every endpoint, request, response and problem type,
// embedded so the API can serve it (GET /api/v1/openapi.yaml) and tests can
// check the router and live traffic against it (internal/apispec).
package api

import _ "embed"

// Spec is openapi.yaml, the OpenAPI 3.0.3 description of the API.
//
//go:embed openapi.yaml
var Spec []byte

// SpecContentType is the media type the spec is served with (RFC 9512).
const SpecContentType = "application/yaml"
