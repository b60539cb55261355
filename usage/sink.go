package usage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// IngestPath is where the billing API takes flush batches.
const IngestPath = "/internal/v1/usage"

// HTTPSink POSTs batches as JSON to the billing API. Sending the same
// batch again is safe: the store recognises its id.
type HTTPSink struct {
	url    string
	token  string
	client *http.Client
}

// NewHTTPSink returns a sink for the billing API at baseURL (e.g.
// "http://127.0.0.1:8081") authenticated with the admin token. A nil client
// gets one with a 10 s timeout.
func NewHTTPSink(baseURL, token string, client *http.Client) *HTTPSink {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &HTTPSink{url: strings.TrimSuffix(baseURL, "/") + IngestPath, token: token, client: client}
}

// Send delivers b. A 409 stale_epoch is ErrStaleEpoch and a 400 wraps
// ErrInvalidBatch; any other failure is worth retrying.
func (s *HTTPSink) Send(ctx context.Context, b Batch) error {
	body, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("http sink: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("http sink: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("http sink: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(msg, &e)
	switch {
	case resp.StatusCode == http.StatusConflict && e.Error == "stale_epoch":
		return fmt.Errorf("http sink: %w: %s", ErrStaleEpoch, e.Message)
	case resp.StatusCode == http.StatusBadRequest:
		return fmt.Errorf("http sink: %w: %s", ErrInvalidBatch, e.Message)
	}
	return fmt.Errorf("http sink: billing api answered %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
}

// StoreSink applies batches straight to a SnapshotStore, for a process
// that runs the proxy and the billing store together (tollgate serve).
type StoreSink struct {
	Store SnapshotStore
}

// Send validates b and applies it; a duplicate is success.
func (s StoreSink) Send(ctx context.Context, b Batch) error {
	if s.Store == nil {
		return errors.New("store sink: no store")
	}
	if err := b.Validate(); err != nil {
		return fmt.Errorf("store sink: %w", err)
	}
	if _, err := s.Store.ApplySnapshots(ctx, b); err != nil {
		return fmt.Errorf("store sink: %w", err)
	}
	return nil
}
