// Package docs carries documents the binary serves: the OpenAPI description
// of the API listener (openapi.yaml), embedded so the served copy is the
// reviewed one.
package docs

import _ "embed"

// OpenAPI is docs/openapi.yaml, served at GET /openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
