package demo

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// call sends one request to h and returns the status, the Content-Type and
// the decoded JSON body (nil for an empty body).
func call(t *testing.T, h http.Handler, method, path, body string) (int, string, any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, rd))
	var v any
	if rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("%s %s: body is not JSON: %v: %q", method, path, err, rec.Body.String())
		}
	}
	return rec.Code, rec.Header().Get("Content-Type"), v
}

func fixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return string(b)
}

func TestEndpoints(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
		// wantFields are top-level fields the JSON object must carry with
		// these values; "*" means present and non-empty.
		wantFields map[string]string
	}{
		{"health", "GET", "/healthz", "", 200, map[string]string{"status": "ok"}},
		{"create message", "POST", "/api/v1/messages", `{"text":"hi"}`, 201, map[string]string{"id": "*", "text": "hi"}},
		{"message without text", "POST", "/api/v1/messages", `{}`, 400, map[string]string{"error": "invalid_request"}},
		{"create agent", "POST", "/api/v1/agents", `{"name":"Ada"}`, 201, map[string]string{"id": "*", "name": "Ada"}},
		{"agent without name", "POST", "/api/v1/agents", `{"name":""}`, 400, map[string]string{"error": "invalid_request"}},
		{"create channel", "POST", "/api/v1/channels", `{"type":"whatsapp","name":"Support"}`, 201,
			map[string]string{"id": "*", "type": "whatsapp", "name": "Support"}},
		{"channel name defaults to type", "POST", "/api/v1/channels", `{"type":"web_widget"}`, 201,
			map[string]string{"type": "web_widget", "name": "web_widget"}},
		{"channel without type", "POST", "/api/v1/channels", `{"name":"x"}`, 400, map[string]string{"error": "invalid_request"}},
		{"create article", "POST", "/api/v1/kb/articles", `{"title":"Refunds","body":"Within 30 days."}`, 201,
			map[string]string{"id": "*", "title": "Refunds", "body": "Within 30 days."}},
		{"article without title", "POST", "/api/v1/kb/articles", `{"body":"x"}`, 400, map[string]string{"error": "invalid_request"}},
		{"auto-reply greeting", "POST", "/api/v1/ai/auto-reply", `{"message":"Hi!"}`, 200,
			map[string]string{"reply": "Hi there! How can I help you today?"}},
		{"auto-reply pricing", "POST", "/api/v1/ai/auto-reply", `{"message":"what does Pro cost? pricing?"}`, 200,
			map[string]string{"reply": "Our plans are Free, Mini and Pro. You can upgrade at any time from the billing page."}},
		{"auto-reply default", "POST", "/api/v1/ai/auto-reply", `{"message":"this is broken"}`, 200,
			map[string]string{"reply": "Thanks for your message! An agent will follow up shortly."}},
		{"auto-reply without message", "POST", "/api/v1/ai/auto-reply", `{}`, 400, map[string]string{"error": "invalid_request"}},
		{"malformed json", "POST", "/api/v1/agents", `{"name":`, 400, map[string]string{"error": "invalid_json", "message": "*"}},
		{"json not an object", "POST", "/api/v1/messages", `["hi"]`, 400, map[string]string{"error": "invalid_json"}},
		{"empty body", "POST", "/api/v1/messages", ``, 400, map[string]string{"error": "invalid_json"}},
		{"body too large", "POST", "/api/v1/messages", `{"text":"` + strings.Repeat("a", maxBody) + `"}`, 413,
			map[string]string{"error": "body_too_large"}},
		{"unknown path", "GET", "/api/v1/nope", "", 404, map[string]string{"error": "not_found", "message": "*"}},
		{"unknown root", "GET", "/", "", 404, map[string]string{"error": "not_found"}},
		{"wrong method", "PUT", "/api/v1/agents", `{}`, 405, map[string]string{"error": "method_not_allowed"}},
		{"delete unknown agent", "DELETE", "/api/v1/agents/agt_999", "", 404, map[string]string{"error": "not_found"}},
		{"delete unknown channel", "DELETE", "/api/v1/channels/nope", "", 404, map[string]string{"error": "not_found"}},
		{"delete unknown article", "DELETE", "/api/v1/kb/articles/nope", "", 404, map[string]string{"error": "not_found"}},
	}
	h := NewHandler()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, ctype, body := call(t, h, tt.method, tt.path, tt.body)
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %v)", status, tt.wantStatus, body)
			}
			if ctype != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ctype)
			}
			obj, ok := body.(map[string]any)
			if !ok {
				t.Fatalf("body = %v, want a JSON object", body)
			}
			for k, want := range tt.wantFields {
				got, _ := obj[k].(string)
				if want == "*" && got == "" || want != "*" && got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestWrongMethodListsAllowed(t *testing.T) {
	rec := httptest.NewRecorder()
	NewHandler().ServeHTTP(rec, httptest.NewRequest("PATCH", "/api/v1/messages", nil))
	if allow := rec.Header().Get("Allow"); !strings.Contains(allow, "POST") || !strings.Contains(allow, "GET") {
		t.Errorf("Allow = %q, want GET and POST", allow)
	}
}

// TestLifecycle creates, lists and deletes each deletable resource.
func TestLifecycle(t *testing.T) {
	tests := []struct {
		name, path, body string
	}{
		{"agents", "/api/v1/agents", `{"name":"Ada"}`},
		{"channels", "/api/v1/channels", `{"type":"telegram","name":"TG"}`},
		{"articles", "/api/v1/kb/articles", fixture(t, "article.json")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHandler()
			_, _, first := call(t, h, "POST", tt.path, tt.body)
			_, _, second := call(t, h, "POST", tt.path, tt.body)
			id1 := first.(map[string]any)["id"].(string)
			id2 := second.(map[string]any)["id"].(string)
			if id1 == id2 {
				t.Fatalf("ids not unique: %q", id1)
			}
			if n := listLen(t, h, tt.path); n != 2 {
				t.Fatalf("list has %d items, want 2", n)
			}
			if status, _, _ := call(t, h, "DELETE", tt.path+"/"+id1, ""); status != http.StatusNoContent {
				t.Fatalf("delete status = %d, want 204", status)
			}
			if status, _, _ := call(t, h, "DELETE", tt.path+"/"+id1, ""); status != http.StatusNotFound {
				t.Fatalf("second delete status = %d, want 404", status)
			}
			_, _, list := call(t, h, "GET", tt.path, "")
			items := list.([]any)
			if len(items) != 1 || items[0].(map[string]any)["id"] != id2 {
				t.Fatalf("after delete list = %v, want only %s", items, id2)
			}
		})
	}
}

func TestListsStartEmptyAndKeepOrder(t *testing.T) {
	h := NewHandler()
	for _, path := range []string{"/api/v1/messages", "/api/v1/agents", "/api/v1/channels", "/api/v1/kb/articles"} {
		if n := listLen(t, h, path); n != 0 {
			t.Errorf("%s: %d items in a fresh store, want 0", path, n)
		}
	}
	for _, text := range []string{"one", "two", "three"} {
		call(t, h, "POST", "/api/v1/messages", `{"text":"`+text+`"}`)
	}
	_, _, list := call(t, h, "GET", "/api/v1/messages", "")
	var got []string
	for _, m := range list.([]any) {
		got = append(got, m.(map[string]any)["text"].(string))
	}
	if strings.Join(got, ",") != "one,two,three" {
		t.Errorf("messages = %v, want one,two,three", got)
	}
}

func listLen(t *testing.T, h http.Handler, path string) int {
	t.Helper()
	status, _, v := call(t, h, "GET", path, "")
	items, ok := v.([]any)
	if status != http.StatusOK || !ok {
		t.Fatalf("GET %s = %d %v, want 200 and a JSON array", path, status, v)
	}
	return len(items)
}

func TestEvents(t *testing.T) {
	srv := httptest.NewServer(newHandler(3, time.Millisecond))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/events")
	if err != nil {
		t.Fatalf("GET events: %v", err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q, want text/event-stream", ct)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read stream: %v", err)
	}
	if want := "data: tick 1\n\ndata: tick 2\n\ndata: tick 3\n\n"; string(b) != want {
		t.Errorf("stream = %q, want %q", b, want)
	}
}

func TestEventsStopWhenClientLeaves(t *testing.T) {
	// An hour between ticks: the handler must return on cancellation, not
	// after the stream's natural end.
	h := newHandler(5, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequest("GET", "/api/v1/events", nil).WithContext(ctx)
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { h.ServeHTTP(rec, req); close(done) }()
	cancel()
	<-done
	if !strings.HasPrefix(rec.Body.String(), "data: tick 1\n\n") || strings.Contains(rec.Body.String(), "tick 2") {
		t.Errorf("stream = %q, want only the first tick", rec.Body.String())
	}
}
