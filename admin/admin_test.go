package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/admin"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/quota"
)

const token = "s3cret-admin"

func setup(t *testing.T) (*httptest.Server, *redis.Client, *config.Config) {
	t.Helper()
	url := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis at %s is required for this test (run scripts/services.sh): %v", url, err)
	}
	t.Cleanup(func() { rdb.Close() })

	env := map[string]string{"TOLLGATE_ADMIN_TOKEN": token}
	data, err := os.ReadFile("../examples/pingback/tollgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("tollgate.yaml", data, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	store := quota.New(rdb, cfg)
	t.Cleanup(func() { store.Close() })
	mux := http.NewServeMux()
	admin.New(cfg, rdb, store, nil).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, rdb, cfg
}

func call(t *testing.T, srv *httptest.Server, method, path, auth, body string) (int, map[string]string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: content type %q", method, path, ct)
	}
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]string{}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: body %s is not a JSON object of strings: %v", method, path, raw, err)
	}
	return resp.StatusCode, out
}

func cleanupTenant(t *testing.T, rdb *redis.Client, id string) {
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, "tg:{"+id+"}:*", 100).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
	})
}

func TestCreateTenantAndChangePlan(t *testing.T) {
	srv, rdb, _ := setup(t)
	bearer := "Bearer " + token

	status, body := call(t, srv, "POST", "/admin/v1/tenants", bearer, `{"name":"Acme","plan":"mini"}`)
	if status != http.StatusCreated {
		t.Fatalf("create: %d %v", status, body)
	}
	id := body["id"]
	cleanupTenant(t, rdb, id)
	if !strings.HasPrefix(id, "ten_") || body["plan"] != "mini" || !strings.HasPrefix(body["api_key"], "tg_") {
		t.Fatalf("create answered %v", body)
	}
	// Only the key's hash is stored.
	keys, _ := rdb.Keys(context.Background(), "tg:apikey:*").Result()
	for _, k := range keys {
		if strings.Contains(k, body["api_key"]) {
			t.Fatalf("the API key is stored in clear: %s", k)
		}
	}

	status, got := call(t, srv, "GET", "/admin/v1/tenants/"+id, bearer, "")
	if status != 200 || got["name"] != "Acme" || got["plan"] != "mini" {
		t.Fatalf("get: %d %v", status, got)
	}

	status, got = call(t, srv, "PUT", "/admin/v1/tenants/"+id+"/plan", bearer, `{"plan":"pro"}`)
	if status != 200 || got["plan"] != "pro" || got["id"] != id {
		t.Fatalf("set plan: %d %v", status, got)
	}
	ent, _ := rdb.HGetAll(context.Background(), "tg:{"+id+"}:ent").Result()
	if ent["plan"] != "pro" || ent["plan_name"] != "Pro" || ent["l:agents"] != "5" || ent["f:integrations"] != "1" {
		t.Fatalf("entitlements after the change: %v", ent)
	}
}

func TestCreateWithoutPlanUsesDefault(t *testing.T) {
	srv, rdb, cfg := setup(t)
	status, body := call(t, srv, "POST", "/admin/v1/tenants", "Bearer "+token, `{"name":"Solo"}`)
	if status != http.StatusCreated || body["plan"] != cfg.DefaultPlan {
		t.Fatalf("create without plan: %d %v, want plan %q", status, body, cfg.DefaultPlan)
	}
	cleanupTenant(t, rdb, body["id"])
}

func TestErrors(t *testing.T) {
	srv, _, _ := setup(t)
	bearer := "Bearer " + token
	tests := []struct {
		name, method, path, auth, body string
		status                         int
		code                           string
	}{
		{"no token", "POST", "/admin/v1/tenants", "", `{"name":"a"}`, 401, "unauthorized"},
		{"wrong token", "POST", "/admin/v1/tenants", "Bearer nope", `{"name":"a"}`, 401, "unauthorized"},
		{"basic auth", "POST", "/admin/v1/tenants", "Basic " + token, `{"name":"a"}`, 401, "unauthorized"},
		{"malformed json", "POST", "/admin/v1/tenants", bearer, `{"name":`, 400, "invalid_json"},
		{"unknown field", "POST", "/admin/v1/tenants", bearer, `{"name":"a","planz":"x"}`, 400, "invalid_json"},
		{"two objects", "POST", "/admin/v1/tenants", bearer, `{"name":"a"}{}`, 400, "invalid_json"},
		{"wrong type", "POST", "/admin/v1/tenants", bearer, `{"name":7}`, 400, "invalid_json"},
		{"empty name", "POST", "/admin/v1/tenants", bearer, `{"name":"  "}`, 400, "invalid_name"},
		{"unknown plan", "POST", "/admin/v1/tenants", bearer, `{"name":"a","plan":"gold"}`, 400, "invalid_plan"},
		{"get unknown tenant", "GET", "/admin/v1/tenants/ten_nope", bearer, "", 404, "tenant_not_found"},
		{"plan of unknown tenant", "PUT", "/admin/v1/tenants/ten_nope/plan", bearer, `{"plan":"pro"}`, 404, "tenant_not_found"},
		{"set unknown plan", "PUT", "/admin/v1/tenants/ten_nope/plan", bearer, `{"plan":"gold"}`, 400, "invalid_plan"},
		{"huge body", "POST", "/admin/v1/tenants", bearer, `{"name":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "body_too_large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := call(t, srv, tc.method, tc.path, tc.auth, tc.body)
			if status != tc.status || body["error"] != tc.code || body["message"] == "" {
				t.Fatalf("got %d %v, want %d %q with a message", status, body, tc.status, tc.code)
			}
		})
	}
}
