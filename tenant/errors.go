package tenant

import "errors"

// The proxy maps these to its 401 answers; any other error from Resolve means
// the store could not answer and becomes a 503.
var (
	ErrMissing = errors.New("tenant: no credential")
	ErrInvalid = errors.New("tenant: invalid credential")
	ErrUnknown = errors.New("tenant: unknown tenant")
)
