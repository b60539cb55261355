package tenant

import (
	"time"

	"go.uber.org/zap"
)

const (
	defaultPositiveTTL = 60 * time.Second
	defaultNegativeTTL = 5 * time.Second
	defaultMaxEntries  = 64 << 10
)

type options struct {
	positive, negative time.Duration
	maxEntries         int
	lookupTimeout      time.Duration
	log                *zap.Logger
}

// Option tunes a Resolver.
type Option func(*options)

// WithTTL sets how long a found (positive) and a not-found (negative) answer
// is cached. Defaults 60s and 5s; non-positive values keep the default.
func WithTTL(positive, negative time.Duration) Option {
	return func(o *options) {
		if positive > 0 {
			o.positive = positive
		}
		if negative > 0 {
			o.negative = negative
		}
	}
}

// WithMaxEntries bounds each cache of the Resolver (default 65536 entries).
func WithMaxEntries(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxEntries = n
		}
	}
}

// WithLookupTimeout bounds each Redis lookup on a cache miss. Zero (the
// default) relies on the client's own read/write timeouts.
func WithLookupTimeout(d time.Duration) Option {
	return func(o *options) { o.lookupTimeout = d }
}

// WithLogger logs subscription trouble; default is no logging.
func WithLogger(l *zap.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}
