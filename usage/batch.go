package usage

import (
	"context"
	"errors"
	"fmt"
)

// Batch is one flush: absolute snapshots of counters, not increments.
type Batch struct {
	// ID names the batch; a retry of the same batch carries the same ID so
	// the store can tell it was already applied.
	ID      string `json:"batch_id"`
	ProxyID string `json:"proxy_id"`
	// Epoch is the tg:epoch the values were read under; the store rejects
	// batches of any other epoch (ErrStaleEpoch).
	Epoch int64  `json:"epoch"`
	Items []Item `json:"items"`
}

// Item is one counter's value at ObservedAtUS.
//
// Metered counters carry their billing period as unix seconds
// [PeriodStart, PeriodEnd). Gauges have PeriodStart = PeriodEnd = 0: they
// live across periods.
type Item struct {
	TenantID    string `json:"tenant_id"`
	Feature     string `json:"feature"`
	PeriodStart int64  `json:"period_start"`
	PeriodEnd   int64  `json:"period_end"`
	Used        int64  `json:"used"`
	// ObservedAtUS is Redis' TIME (microseconds) when the value was read,
	// in the same MULTI: the order of two snapshots of one counter.
	ObservedAtUS int64 `json:"observed_at_us"`
}

// IsGauge reports whether the item is a gauge (no period).
func (it Item) IsGauge() bool { return it.PeriodStart == 0 && it.PeriodEnd == 0 }

// Sink delivers a batch to the billing store. Send must be safe to retry
// with the same batch: that is how a lost answer is recovered.
type Sink interface {
	Send(ctx context.Context, b Batch) error
}

// SnapshotStore is the billing side of a flush (billing.Store implements
// it).
//
// ApplySnapshots records b.ID and applies the items in one transaction: a
// batch already recorded changes nothing and returns applied=false; each
// item replaces the stored value only when it is newer (epoch, then
// ObservedAtUS). A batch whose epoch is not the current one is
// ErrStaleEpoch; a malformed one wraps ErrInvalidBatch.
type SnapshotStore interface {
	ApplySnapshots(ctx context.Context, b Batch) (applied bool, err error)
}

var (
	// ErrStaleEpoch: the batch was read from a Redis generation the
	// billing store no longer accepts (Redis was restored since).
	ErrStaleEpoch = errors.New("usage: stale epoch")
	// ErrInvalidBatch: the batch is malformed; retrying cannot help.
	ErrInvalidBatch = errors.New("usage: invalid batch")
)

// MaxBatchItems bounds a batch so one transaction and one request stay
// small; the Flusher splits larger dirty sets.
const MaxBatchItems = 10_000

const maxIDLen = 128

// maxPeriodUnix bounds a metered item's period: 10000-01-01T00:00:00Z in
// unix seconds. Anything later is no billing period, and PostgreSQL's
// to_timestamp would refuse it inside the transaction, turning one bad item
// into an unavailable store the flusher retries forever.
const maxPeriodUnix = 253402300800

// Validate checks b and returns an error wrapping ErrInvalidBatch that
// names the offending field.
func (b *Batch) Validate() error {
	switch {
	case b.ID == "" || len(b.ID) > maxIDLen:
		return invalidField("batch_id", "must be 1 to %d characters", maxIDLen)
	case b.ProxyID == "" || len(b.ProxyID) > maxIDLen:
		return invalidField("proxy_id", "must be 1 to %d characters", maxIDLen)
	case b.Epoch <= 0:
		return invalidField("epoch", "must be a positive integer")
	case len(b.Items) > MaxBatchItems:
		return invalidField("items", "%d items, at most %d per batch", len(b.Items), MaxBatchItems)
	}
	for i, it := range b.Items {
		if err := it.validate(); err != nil {
			return fmt.Errorf("items[%d].%w", i, err)
		}
	}
	return nil
}

func (it Item) validate() error {
	switch {
	case it.TenantID == "" || len(it.TenantID) > maxIDLen:
		return invalidField("tenant_id", "must be 1 to %d characters", maxIDLen)
	case it.Feature == "" || len(it.Feature) > maxIDLen:
		return invalidField("feature", "must be 1 to %d characters", maxIDLen)
	case it.Used < 0:
		return invalidField("used", "must be >= 0, got %d", it.Used)
	case it.ObservedAtUS <= 0:
		return invalidField("observed_at_us", "must be a positive Redis TIME in microseconds")
	case it.IsGauge():
		return nil
	case it.PeriodStart <= 0 || it.PeriodStart >= maxPeriodUnix:
		return invalidField("period_start", "must be unix seconds from 1970 to 9999 (0 with period_end 0 for a gauge), got %d", it.PeriodStart)
	case it.PeriodEnd <= it.PeriodStart:
		return invalidField("period_end", "must be after period_start")
	case it.PeriodEnd > maxPeriodUnix:
		return invalidField("period_end", "must be unix seconds from 1970 to 9999, got %d", it.PeriodEnd)
	}
	return nil
}

// fieldError names the field a batch is invalid in; the message reads
// "items[3].used: must be >= 0".
type fieldError struct {
	field, msg string
}

func (e *fieldError) Error() string { return e.field + ": " + e.msg }
func (e *fieldError) Unwrap() error { return ErrInvalidBatch }

func invalidField(field, format string, args ...any) error {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}
