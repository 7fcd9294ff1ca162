// Package casearchiver holds the API contract, openapi.yaml, so that the binary serves exactly the
// spec that the tests check against the router.
package casearchiver

import _ "embed"

// OpenAPI is the OpenAPI 3.1 description of every route the server registers.
//
//go:embed openapi.yaml
var OpenAPI []byte
