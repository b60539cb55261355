package usage

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"go.uber.org/zap"
)

// Ingest is the billing API's POST /internal/v1/usage: it applies flush
// batches to the store. Answers are JSON; errors are
// {"error","message"}:
//
//	200 {"applied":true|false,"items":n}  (false: the batch was already applied)
//	400 invalid_batch     malformed JSON or a bad field (named in message)
//	401 unauthorized      no or wrong bearer token
//	405 method_not_allowed
//	409 stale_epoch       the batch's epoch is not the current one
//	413 body_too_large
//	503 store_unavailable PostgreSQL failed; retry
type Ingest struct {
	store SnapshotStore
	token []byte
	log   *zap.Logger
}

// IngestOption configures an Ingest.
type IngestOption func(*Ingest)

// WithIngestLogger sets the logger; the default discards.
func WithIngestLogger(l *zap.Logger) IngestOption {
	return func(in *Ingest) {
		if l != nil {
			in.log = l
		}
	}
}

// maxIngestBody fits MaxBatchItems items of long ids.
const maxIngestBody = 8 << 20

// NewIngest returns the handler. An empty token refuses every request.
func NewIngest(store SnapshotStore, token string, opts ...IngestOption) *Ingest {
	in := &Ingest{store: store, token: []byte(token), log: zap.NewNop()}
	for _, o := range opts {
		o(in)
	}
	return in
}

// wireBatch detects missing numbers, which would otherwise read as 0.
type wireBatch struct {
	ID      string     `json:"batch_id"`
	ProxyID string     `json:"proxy_id"`
	Epoch   *int64     `json:"epoch"`
	Items   []wireItem `json:"items"`
}

type wireItem struct {
	TenantID     string `json:"tenant_id"`
	Feature      string `json:"feature"`
	PeriodStart  *int64 `json:"period_start"`
	PeriodEnd    *int64 `json:"period_end"`
	Used         *int64 `json:"used"`
	ObservedAtUS *int64 `json:"observed_at_us"`
}

func (in *Ingest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		return
	}
	if !in.authorized(r) {
		writeError(w, http.StatusUnauthorized, "unauthorized", "a valid admin bearer token is required")
		return
	}
	b, err := decodeBatch(http.MaxBytesReader(w, r.Body, maxIngestBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("a batch is at most %d bytes", maxIngestBody))
			return
		}
		writeError(w, http.StatusBadRequest, "invalid_batch", err.Error())
		return
	}
	applied, err := in.store.ApplySnapshots(r.Context(), b)
	switch {
	case errors.Is(err, ErrStaleEpoch):
		writeError(w, http.StatusConflict, "stale_epoch",
			fmt.Sprintf("epoch %d is not the current one: Redis was restored since these values were read", b.Epoch))
		return
	case errors.Is(err, ErrInvalidBatch):
		writeError(w, http.StatusBadRequest, "invalid_batch", err.Error())
		return
	case err != nil:
		in.log.Error("usage ingest failed", zap.String("batch_id", b.ID), zap.Error(err))
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", "the billing store is unavailable; retry the same batch")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Applied bool `json:"applied"`
		Items   int  `json:"items"`
	}{applied, len(b.Items)})
}

// decodeBatch reads exactly one JSON batch and validates it. Every error
// but the reader's own (a body over the limit) says what is wrong in terms
// of the wire format.
func decodeBatch(r io.Reader) (Batch, error) {
	var wb wireBatch
	dec := json.NewDecoder(r)
	if err := dec.Decode(&wb); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return Batch{}, err
		}
		return Batch{}, fmt.Errorf("body is not a JSON batch: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Batch{}, errors.New("body must hold exactly one JSON object")
	}
	b, err := wb.batch()
	if err == nil {
		err = b.Validate()
	}
	return b, err
}

func (in *Ingest) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && len(in.token) > 0 && subtle.ConstantTimeCompare([]byte(tok), in.token) == 1
}

func (wb *wireBatch) batch() (Batch, error) {
	if wb.Epoch == nil {
		return Batch{}, invalidField("epoch", "is required")
	}
	if wb.Items == nil {
		return Batch{}, invalidField("items", "is required")
	}
	b := Batch{ID: wb.ID, ProxyID: wb.ProxyID, Epoch: *wb.Epoch, Items: make([]Item, len(wb.Items))}
	for i, wi := range wb.Items {
		for _, f := range [...]struct {
			name string
			v    *int64
		}{{"period_start", wi.PeriodStart}, {"period_end", wi.PeriodEnd}, {"used", wi.Used}, {"observed_at_us", wi.ObservedAtUS}} {
			if f.v == nil {
				return Batch{}, fmt.Errorf("items[%d].%w", i, invalidField(f.name, "is required"))
			}
		}
		b.Items[i] = Item{TenantID: wi.TenantID, Feature: wi.Feature, PeriodStart: *wi.PeriodStart,
			PeriodEnd: *wi.PeriodEnd, Used: *wi.Used, ObservedAtUS: *wi.ObservedAtUS}
	}
	return b, nil
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}{code, msg})
}
