package usage

import (
	"strconv"
	"strings"
)

// The Redis keys this package reads and writes. The counter formats are
// quota's (docs/design.md); they are repeated here because the flusher
// reads counters by key and the restorer recreates them.
const (
	// EpochKey holds the id of the restore that populated this Redis. Its
	// absence means a fresh or wiped Redis: flushers hold back and the
	// restorer runs.
	EpochKey = "tg:epoch"

	apiKeyPrefix = "tg:apikey:"
)

func entKey(tenantID string) string { return "tg:{" + tenantID + "}:ent" }

// restoredKey marks, in the tenant's slot, that the tenant's counts were
// restored into this Redis (the value is the epoch). A retried restore
// finds it and adds nothing a second time.
func restoredKey(tenantID string) string { return "tg:{" + tenantID + "}:restored" }

func meteredKey(tenantID, feature string, periodStart int64) string {
	return "tg:{" + tenantID + "}:m:" + feature + ":" + strconv.FormatInt(periodStart, 10)
}

func gaugeKey(tenantID, feature string) string {
	return "tg:{" + tenantID + "}:g:" + feature
}

// counter is a parsed counter key.
type counter struct {
	key         string
	tenant      string
	feature     string
	periodStart int64 // 0 for gauges
	gauge       bool
}

// parseCounterKey accepts exactly tg:{tid}:m:<feature>:<periodStart> and
// tg:{tid}:g:<feature>. Everything else that matches the sweep patterns
// (quota's reconcile markers "<counter>:d:<batch>", ...) is rejected.
func parseCounterKey(key string) (counter, bool) {
	rest, ok := strings.CutPrefix(key, "tg:{")
	if !ok {
		return counter{}, false
	}
	end := strings.Index(rest, "}:")
	// A tenant id the ingest would refuse is no counter of ours either.
	if end <= 0 || end > maxIDLen {
		return counter{}, false
	}
	c := counter{key: key, tenant: rest[:end]}
	rest = rest[end+2:]
	switch {
	case strings.HasPrefix(rest, "g:"):
		c.feature, c.gauge = rest[2:], true
		if !validFeature(c.feature) {
			return counter{}, false
		}
		return c, true
	case strings.HasPrefix(rest, "m:"):
		rest = rest[2:]
		i := strings.IndexByte(rest, ':')
		if i <= 0 {
			return counter{}, false
		}
		c.feature = rest[:i]
		ps, err := strconv.ParseInt(rest[i+1:], 10, 64)
		// A start the ingest would refuse is no counter of ours: flushed,
		// it would get its whole batch dropped.
		if err != nil || ps <= 0 || ps >= maxPeriodUnix || !validFeature(c.feature) {
			return counter{}, false
		}
		c.periodStart = ps
		return c, true
	}
	return counter{}, false
}

func validFeature(f string) bool {
	return f != "" && len(f) <= maxIDLen && !strings.ContainsAny(f, ":{}")
}
