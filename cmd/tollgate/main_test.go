package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/billing"
	"github.com/tollgate/tollgate/billing/billingtest"
	"github.com/tollgate/tollgate/internal/redistest"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/tenant"
	"github.com/tollgate/tollgate/usage"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeAnswersHealthzOnBothListeners runs the real command in-process:
// demo upstream, proxy and API, then stops it with its context.
func TestServeAnswersHealthzOnBothListeners(t *testing.T) {
	demoAddr, proxyAddr, apiAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	t.Setenv("TOLLGATE_UPSTREAM_URL", "http://"+demoAddr)
	t.Setenv("TOLLGATE_LISTEN", proxyAddr)
	t.Setenv("TOLLGATE_API_LISTEN", apiAddr)
	redistest.NewClient(t) // a clear failure when Redis is missing, not a health timeout
	t.Setenv("TOLLGATE_REDIS_URL", redistest.URL())
	t.Setenv("TOLLGATE_ADMIN_TOKEN", "t0ken")
	t.Setenv("TOLLGATE_DATABASE_URL", billingtest.NewSchema(t))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- run(ctx, []string{"demo", "--listen", demoAddr}, io.Discard, io.Discard) }()
	go func() {
		done <- run(ctx, []string{"serve", "--config", "../../examples/pingback/tollgate.yaml"}, io.Discard, io.Discard)
	}()

	for _, addr := range []string{proxyAddr, apiAddr, demoAddr} {
		waitHealthy(t, "http://"+addr+"/healthz")
	}

	// The API's admin routes are mounted and guarded.
	resp, err := http.Post("http://"+apiAddr+"/admin/v1/tenants", "application/json", strings.NewReader(`{"name":"x","plan":"free"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("admin without token: %d, want 401", resp.StatusCode)
	}

	cancel()
	for i := 0; i < 2; i++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("command returned %v after shutdown", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("commands did not stop within 15 s of cancellation")
		}
	}
}

func waitHealthy(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(b, []byte(`"ok"`)) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy after 10 s (last error %v)", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestInvalidConfigFailsNamingFileAndKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "broken.yaml")
	cfg := `upstream: {url: http://127.0.0.1:9000}
tenant: {source: api_key}
features:
  messages: {kind: metered, grace: 0.5}
plans:
  - {slug: free, name: Free, price: {amount: 0, currency: USD}, limits: {messages: 10}}
routes: []
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"serve", "--config", path}, io.Discard, &stderr)
	if err == nil {
		t.Fatal("serve accepted a grace below 1")
	}
	for _, want := range []string{"broken.yaml", "features.messages.grace"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not name %q", err, want)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	var stderr bytes.Buffer
	if err := run(context.Background(), []string{"frobnicate"}, io.Discard, &stderr); err == nil {
		t.Fatal("unknown command accepted")
	}
	if !strings.Contains(stderr.String(), "usage: tollgate") {
		t.Fatalf("no usage printed: %q", stderr.String())
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	ctx := context.Background()
	url := billingtest.NewSchema(t) // empty: migrate has everything to apply
	var out bytes.Buffer
	if err := run(ctx, []string{"migrate", "--database", url}, &out, io.Discard); err != nil {
		t.Fatalf("first migrate: %v", err)
	}
	if !strings.Contains(out.String(), "applied 0001_core") {
		t.Fatalf("first migrate printed %q", out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"migrate", "--database", url}, &out, io.Discard); err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if strings.TrimSpace(out.String()) != "schema up to date" {
		t.Fatalf("second migrate printed %q", out.String())
	}
	if err := run(ctx, []string{"migrate", "--database", ""}, io.Discard, io.Discard); err == nil {
		t.Fatal("migrate without a database URL succeeded")
	}
}

// TestBillingRunsTheAPIAlone starts `tollgate billing`: the API answers
// (health, tenant API with JSON errors, JSON 404s) and no proxy listens.
func TestBillingRunsTheAPIAlone(t *testing.T) {
	proxyAddr, apiAddr := freeAddr(t), freeAddr(t)
	t.Setenv("TOLLGATE_LISTEN", proxyAddr)
	t.Setenv("TOLLGATE_API_LISTEN", apiAddr)
	redistest.NewClient(t) // a clear failure when Redis is missing, not a health timeout
	t.Setenv("TOLLGATE_REDIS_URL", redistest.URL())
	t.Setenv("TOLLGATE_ADMIN_TOKEN", "t0ken")
	t.Setenv("TOLLGATE_DATABASE_URL", billingtest.NewSchema(t))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"billing", "--config", "../../examples/pingback/tollgate.yaml"}, io.Discard, io.Discard)
	}()
	waitHealthy(t, "http://"+apiAddr+"/healthz")

	for _, tc := range []struct {
		path   string
		status int
		code   string
	}{
		{"/subscription", http.StatusUnauthorized, "unauthorized"},
		{"/no/such/thing", http.StatusNotFound, "not_found"},
	} {
		resp, err := http.Get("http://" + apiAddr + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(b), `"error":"`+tc.code+`"`) {
			t.Fatalf("GET %s: %d %s, want %d %s", tc.path, resp.StatusCode, b, tc.status, tc.code)
		}
	}
	if c, err := net.DialTimeout("tcp", proxyAddr, time.Second); err == nil {
		c.Close()
		t.Fatal("tollgate billing opened the proxy listener")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("billing returned %v after shutdown", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("billing did not stop within 15 s")
	}
}

// TestServeWritesThroughPlansChangedInTheFile: a limit changed in the
// YAML reaches the Redis entitlements of the plan's existing tenants when
// `tollgate serve` starts on the changed file, not only the plan row.
func TestServeWritesThroughPlansChangedInTheFile(t *testing.T) {
	proxyAddr, apiAddr := freeAddr(t), freeAddr(t)
	t.Setenv("TOLLGATE_UPSTREAM_URL", "http://"+freeAddr(t))
	t.Setenv("TOLLGATE_LISTEN", proxyAddr)
	t.Setenv("TOLLGATE_API_LISTEN", apiAddr)
	rdb := redistest.NewClient(t)
	t.Setenv("TOLLGATE_REDIS_URL", redistest.URL())
	t.Setenv("TOLLGATE_ADMIN_TOKEN", "t0ken")
	t.Setenv("TOLLGATE_DATABASE_URL", billingtest.NewSchema(t))

	const example = "../../examples/pingback/tollgate.yaml"
	changedPath := editedExample(t, "limits: {messages: 2500,", "limits: {messages: 3000,")

	serveUntil := func(path string, during func()) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- run(ctx, []string{"serve", "--config", path}, io.Discard, io.Discard) }()
		waitHealthy(t, "http://"+apiAddr+"/healthz")
		during()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("serve returned %v after shutdown", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("serve did not stop within 15 s")
		}
	}
	limit := func(id string) string {
		return rdb.HGet(context.Background(), "tg:{"+id+"}:ent", "l:messages").Val()
	}

	var id string
	serveUntil(example, func() {
		req, _ := http.NewRequest("POST", "http://"+apiAddr+"/admin/v1/tenants", strings.NewReader(`{"name":"Acme","plan":"mini"}`))
		req.Header.Set("Authorization", "Bearer t0ken")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			ID     string `json:"id"`
			APIKey string `json:"api_key"`
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("create tenant: %d, %v", resp.StatusCode, err)
		}
		id = out.ID
		t.Cleanup(func() {
			rdb.Del(context.Background(), "tg:{"+id+"}:ent", "tg:apikey:"+tenant.HashKey(out.APIKey))
		})
		if got := limit(id); got != "2500" {
			t.Fatalf("messages limit on the example's mini: %q", got)
		}
	})
	serveUntil(changedPath, func() {
		deadline := time.Now().Add(10 * time.Second)
		for limit(id) != "3000" {
			if time.Now().After(deadline) {
				t.Fatalf("messages limit after a start on the changed file: %q, want 3000", limit(id))
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// TestGracefulShutdownFlushesLeaseUsage: with messages in lease mode, the
// units a stopping `serve` admitted are reported to Redis by the quota
// store's Close, and the final usage flush runs after it, so PostgreSQL
// holds them too when serve returns (not at the next start's sweep).
func TestGracefulShutdownFlushesLeaseUsage(t *testing.T) {
	demoAddr, proxyAddr, apiAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	t.Setenv("TOLLGATE_UPSTREAM_URL", "http://"+demoAddr)
	t.Setenv("TOLLGATE_LISTEN", proxyAddr)
	t.Setenv("TOLLGATE_API_LISTEN", apiAddr)
	// A Redis of its own: the shared one's tg:epoch belongs to whichever
	// test database restored it last, and a flusher that met another
	// database's epoch holds back for a while.
	redisAddr := redistest.Private(t)
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { rdb.Close() })
	t.Setenv("TOLLGATE_REDIS_URL", "redis://"+redisAddr+"/0")
	t.Setenv("TOLLGATE_ADMIN_TOKEN", "t0ken")
	dbURL := billingtest.NewSchema(t)
	t.Setenv("TOLLGATE_DATABASE_URL", dbURL)

	path := editedExample(t, "  messages:\n    kind: metered\n", "  messages:\n    kind: metered\n    mode: lease\n")

	ctx := context.Background()
	pool, err := billing.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	db := billing.New(pool)

	demoCtx, stopDemo := context.WithCancel(ctx)
	demoDone := make(chan error, 1)
	go func() { demoDone <- run(demoCtx, []string{"demo", "--listen", demoAddr}, io.Discard, io.Discard) }()
	t.Cleanup(func() {
		stopDemo()
		<-demoDone
	})
	serveCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	log := newSyncBuffer()
	go func() { done <- run(serveCtx, []string{"serve", "--config", path}, io.Discard, log) }()
	defer func() {
		if t.Failed() {
			t.Logf("serve's log:\n%s", log.String())
		}
	}()
	for _, addr := range []string{proxyAddr, apiAddr, demoAddr} {
		waitHealthy(t, "http://"+addr+"/healthz")
	}
	// The flusher delivers only once the restorer gave Redis this
	// database's epoch.
	deadline := time.Now().Add(10 * time.Second)
	for {
		e, err := db.CurrentEpoch(ctx)
		if err == nil && e > 0 && rdb.Get(ctx, usage.EpochKey).Val() == strconv.FormatInt(e, 10) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no restore within 10 s (epoch %d, %v)", e, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	key := createTenant(t, apiAddr, "free") // messages: 250 a month
	id := rdb.Get(ctx, "tg:apikey:"+tenant.HashKey(key)).Val()
	if id == "" {
		t.Fatal("the new tenant's API key is not in Redis")
	}
	const messages = 10
	for i := range messages {
		req, _ := http.NewRequest(http.MethodPost, "http://"+proxyAddr+"/api/v1/messages", strings.NewReader(`{"text":"hi"}`))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("message %d: %d, want 201", i+1, resp.StatusCode)
		}
	}

	// Stopped well within the lease interval: the units are still in the
	// instance's lease, not yet in Redis.
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after shutdown", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30 s")
	}

	anchor, _ := strconv.ParseInt(rdb.HGet(ctx, "tg:{"+id+"}:ent", "anchor").Val(), 10, 64)
	start, _ := quota.Period(anchor, time.Now())
	counter := "tg:{" + id + "}:m:messages:" + strconv.FormatInt(start.Unix(), 10)
	if n, err := rdb.Get(ctx, counter).Int64(); err != nil || n != messages {
		t.Errorf("redis %s = %d, %v; want %d", counter, n, err, messages)
	}
	used, err := db.UsageFor(ctx, id, start)
	if err != nil {
		t.Fatal(err)
	}
	if used["messages"] != messages {
		t.Errorf("postgresql holds %d messages after the graceful stop, want %d", used["messages"], messages)
	}
}

// editedExample writes the pingback example with its first old replaced by
// new to a temporary file and returns its path; the test fails when the
// example no longer holds old.
func editedExample(t *testing.T, old, new string) string {
	t.Helper()
	data, err := os.ReadFile("../../examples/pingback/tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	edited := bytes.Replace(data, []byte(old), []byte(new), 1)
	if bytes.Equal(edited, data) {
		t.Fatalf("the pingback example no longer holds %q", old)
	}
	path := filepath.Join(t.TempDir(), "tollgate.yaml")
	if err := os.WriteFile(path, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
