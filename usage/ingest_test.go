package usage_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/usage"
)

const token = "test-admin-token"

func post(t *testing.T, url, auth, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+usage.IngestPath, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

func batchJSON(t *testing.T, b usage.Batch) string {
	t.Helper()
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func TestIngestAnswers(t *testing.T) {
	cfg := testConfig(t)
	store, _ := newBilling(t, cfg)
	e, err := store.BeginEpoch(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ingestMux(usage.NewIngest(store, token)))
	defer srv.Close()

	start, end := thisMonth()
	good := usage.Batch{ID: "b-ok", ProxyID: "p", Epoch: e, Items: []usage.Item{
		{TenantID: "t1", Feature: "messages", PeriodStart: start, PeriodEnd: end, Used: 3, ObservedAtUS: 10},
	}}
	stale := good
	stale.ID, stale.Epoch = "b-stale", e+7
	tests := []struct {
		name, auth, body string
		status           int
		code, mention    string
	}{
		{"no token", "", batchJSON(t, good), 401, "unauthorized", ""},
		{"wrong token", "nope", batchJSON(t, good), 401, "unauthorized", ""},
		{"bad json", token, `{"batch_id":`, 400, "invalid_batch", "JSON"},
		{"two objects", token, batchJSON(t, good) + "{}", 400, "invalid_batch", "one JSON object"},
		{"missing batch id", token, `{"proxy_id":"p","epoch":1,"items":[]}`, 400, "invalid_batch", "batch_id"},
		{"missing epoch", token, `{"batch_id":"b","proxy_id":"p","items":[]}`, 400, "invalid_batch", "epoch"},
		{"missing used", token, `{"batch_id":"b","proxy_id":"p","epoch":1,"items":[{"tenant_id":"t","feature":"messages","period_start":1,"period_end":2,"observed_at_us":5}]}`,
			400, "invalid_batch", "items[0].used"},
		{"missing tenant", token, `{"batch_id":"b","proxy_id":"p","epoch":1,"items":[{"feature":"messages","period_start":1,"period_end":2,"used":1,"observed_at_us":5}]}`,
			400, "invalid_batch", "items[0].tenant_id"},
		{"negative used", token, `{"batch_id":"b","proxy_id":"p","epoch":1,"items":[{"tenant_id":"t","feature":"messages","period_start":1,"period_end":2,"used":-4,"observed_at_us":5}]}`,
			400, "invalid_batch", "items[0].used"},
		// PostgreSQL's to_timestamp refuses it: answered 503 it would be
		// retried forever.
		{"period past year 9999", token, `{"batch_id":"b","proxy_id":"p","epoch":1,"items":[{"tenant_id":"t","feature":"messages","period_start":1125899906842624,"period_end":1125899906842625,"used":1,"observed_at_us":5}]}`,
			400, "invalid_batch", "items[0].period_start"},
		{"unknown epoch", token, batchJSON(t, stale), 409, "stale_epoch", ""},
		{"ok", token, batchJSON(t, good), 200, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := post(t, srv.URL, tt.auth, tt.body)
			if status != tt.status {
				t.Fatalf("status %d (%v), want %d", status, out, tt.status)
			}
			if tt.code != "" && out["error"] != tt.code {
				t.Fatalf("error %v, want %s", out["error"], tt.code)
			}
			if msg, _ := out["message"].(string); tt.mention != "" && !strings.Contains(msg, tt.mention) {
				t.Fatalf("message %q does not mention %s", msg, tt.mention)
			}
			if tt.status == 200 && out["applied"] != true {
				t.Fatalf("answer %v, want applied", out)
			}
		})
	}

	resp, err := http.Get(srv.URL + usage.IngestPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
}

func ingestMux(h http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle(usage.IngestPath, h)
	return mux
}

func TestIngestStoreDown(t *testing.T) {
	cfg := testConfig(t)
	_, dbURL := newBilling(t, cfg)
	pool, err := openPool(testCtx(t), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	pool.Close() // PostgreSQL "down": every query fails
	srv := httptest.NewServer(ingestMux(usage.NewIngest(billing.New(pool), token)))
	defer srv.Close()
	b := usage.Batch{ID: "b", ProxyID: "p", Epoch: 1, Items: []usage.Item{}}
	status, out := post(t, srv.URL, token, batchJSON(t, b))
	if status != 503 || out["error"] != "store_unavailable" {
		t.Fatalf("answer %d %v, want 503 store_unavailable", status, out)
	}
}

// The same batch twice, then 20 times at once, over HTTP: counted once.
func TestIngestSameBatchCountsOnce(t *testing.T) {
	cfg := testConfig(t)
	store, _ := newBilling(t, cfg)
	e, err := store.BeginEpoch(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ingestMux(usage.NewIngest(store, token)))
	defer srv.Close()
	sink := usage.NewHTTPSink(srv.URL, token, nil)
	start, end := thisMonth()
	mk := func(id string, used, at int64) usage.Batch {
		return usage.Batch{ID: id, ProxyID: "p", Epoch: e, Items: []usage.Item{
			{TenantID: "t1", Feature: "messages", PeriodStart: start, PeriodEnd: end, Used: used, ObservedAtUS: at},
			{TenantID: "t1", Feature: "agents", Used: used / 10, ObservedAtUS: at},
		}}
	}

	b := mk("twice", 40, 100)
	for i, want := range []bool{true, false} {
		status, out := post(t, srv.URL, token, batchJSON(t, b))
		if status != 200 || out["applied"] != want {
			t.Fatalf("delivery %d: %d %v, want applied=%v", i+1, status, out, want)
		}
	}
	if m, a := totals(t, store, "t1"); m != 40 || a != 4 {
		t.Fatalf("messages %d agents %d, want 40 and 4", m, a)
	}

	b = mk("concurrent", 70, 200)
	var wg sync.WaitGroup
	var applied atomic.Int32
	for range 20 {
		wg.Go(func() {
			raw, _ := json.Marshal(b)
			req, _ := http.NewRequest(http.MethodPost, srv.URL+usage.IngestPath, bytes.NewReader(raw))
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("post: %v", err)
				return
			}
			defer resp.Body.Close()
			var out struct{ Applied bool }
			if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&out) != nil {
				t.Errorf("status %d", resp.StatusCode)
				return
			}
			if out.Applied {
				applied.Add(1)
			}
		})
	}
	wg.Wait()
	if applied.Load() != 1 {
		t.Fatalf("applied %d times, want 1", applied.Load())
	}
	if err := sink.Send(testCtx(t), b); err != nil { // a retry through the sink: a no-op
		t.Fatal(err)
	}
	if m, a := totals(t, store, "t1"); m != 70 || a != 7 {
		t.Fatalf("messages %d agents %d, want 70 and 7", m, a)
	}
	// An older snapshot arriving last changes nothing.
	if err := sink.Send(testCtx(t), mk("late", 50, 150)); err != nil {
		t.Fatal(err)
	}
	if m, _ := totals(t, store, "t1"); m != 70 {
		t.Fatalf("a late older snapshot set messages to %d", m)
	}
}
