package usage

// Test-only knobs: tests share one Redis with other packages, so they use
// their own epoch key and sweep only their own tenants.

func WithEpochKey(k string) FlusherOption { return func(f *Flusher) { f.epochKey = k } }

func WithSweepTenants(glob string) FlusherOption { return func(f *Flusher) { f.sweepTenants = glob } }

// WithScriptRead reads counters the Redis Cluster way (a script per
// tenant) on any client.
func WithScriptRead() FlusherOption { return func(f *Flusher) { f.useScript = true } }
