package tenant

import (
	"errors"
	"fmt"
)

// The proxy maps these to its 401 answers, except ErrRepeated (a 400); any
// other error from Resolve means the store could not answer and becomes a
// 503.
var (
	ErrMissing = errors.New("tenant: no credential")
	ErrInvalid = errors.New("tenant: invalid credential")
	ErrUnknown = errors.New("tenant: unknown tenant")

	// ErrRepeated is the ErrInvalid of a request that carries the tenant
	// header more than once: an ambiguous request rather than a bad
	// credential.
	ErrRepeated = fmt.Errorf("%w: header sent more than once", ErrInvalid)
)
