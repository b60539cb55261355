package admin_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/admin"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/tenant"
)

// gatedStore is a worker's quota store whose next PutEntitlement, once
// armed, waits until the test opens the gate: the worker's write-through
// has read the tenant from PostgreSQL and not yet written Redis.
type gatedStore struct {
	*quota.Store
	mu      sync.Mutex
	armed   bool
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gatedStore) PutEntitlement(ctx context.Context, ent quota.Entitlement) error {
	g.mu.Lock()
	hold := g.armed
	g.armed = false
	g.mu.Unlock()
	if hold {
		close(g.entered)
		select {
		case <-g.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Store.PutEntitlement(ctx, ent)
}

// arm holds up the next PutEntitlement.
func (g *gatedStore) arm() {
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
}

func (g *gatedStore) open() { g.once.Do(func() { close(g.release) }) }

// waitEntered waits until the armed PutEntitlement is held up.
func (g *gatedStore) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the gated worker never reached its Redis write")
	}
}

// gatedWorker starts a second admin API, as another worker process or
// replica would run, on the same PostgreSQL and Redis, whose entitlement
// writes the test can hold up. It shares nothing in-process with e.api.
// syncHeld starts worker's write-through of tenant id and returns once it
// is held in gate, inside the tenant's section; its result comes on the
// channel after gate.open.
func syncHeld(t *testing.T, gate *gatedStore, worker *admin.API, ctx context.Context, id string) <-chan error {
	t.Helper()
	gate.arm()
	synced := make(chan error, 1)
	go func() { synced <- worker.SyncTenant(ctx, id) }()
	gate.waitEntered(t)
	return synced
}

func (e *env) gatedWorker() (*gatedStore, *admin.API, *httptest.Server) {
	g := &gatedStore{entered: make(chan struct{}), release: make(chan struct{})}
	api, _, srv := e.serveWith(e.rdb, func(s *quota.Store) admin.Entitlements {
		g.Store = s
		return g
	})
	e.t.Cleanup(g.open)
	return g, api, srv
}

type callResult struct {
	status int
	body   obj
	err    error
}

// callAsync makes the call in a goroutine; its answer arrives on the
// channel.
func callAsync(srv *httptest.Server, method, path, body string) <-chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		status, out, err := doCall(srv, method, path, bearer, body)
		ch <- callResult{status, out, err}
	}()
	return ch
}

// pending fails the test if the call answers within d: it must be waiting
// for the other worker.
func pending(t *testing.T, ch <-chan callResult, d time.Duration, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s answered %d %v while the other worker's write-through was under way", what, r.status, r.body)
	case <-time.After(d):
	}
}

func answer(t *testing.T, ch <-chan callResult, what string) callResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: no answer within 15 s", what)
	}
	return callResult{}
}

// TestRevokeWaitsForAnotherWorkersSync: worker 2's write-through read the
// key as live; worker 1 then revokes it. Worker 1's Redis step waits for
// worker 2's write-through, so the key does not come back after the
// revocation deleted it, and the proxy refuses it.
func TestRevokeWaitsForAnotherWorkersSync(t *testing.T) {
	e := setup(t)
	id, first := e.createTenant("Race", "free")
	got := e.must(201, "POST", "/admin/v1/tenants/"+id+"/keys", "")
	key, keyID := str(got["api_key"]), str(got["id"])
	gate, worker2, _ := e.gatedWorker()
	ctx := testCtx(t)

	synced := syncHeld(t, gate, worker2, ctx, id)

	revoked := callAsync(e.srv, "DELETE", "/admin/v1/tenants/"+id+"/keys/"+keyID, "")
	eventually(t, "the revocation is committed in postgres", func() bool {
		keys, err := e.db.ListAPIKeys(ctx, id)
		for _, k := range keys {
			if k.ID == keyID {
				return err == nil && k.RevokedAt != nil
			}
		}
		return false
	})
	pending(t, revoked, 300*time.Millisecond, "the revocation")
	gate.open()
	if err := <-synced; err != nil {
		t.Fatalf("worker 2's sync: %v", err)
	}
	if r := answer(t, revoked, "revoke"); r.status != 200 {
		t.Fatalf("revoke: %d %v", r.status, r.body)
	}

	if n, err := e.rdb.Exists(ctx, "tg:apikey:"+tenant.HashKey(key)).Result(); err != nil || n != 0 {
		t.Fatalf("revoked key in redis after both workers: %d, %v", n, err)
	}
	resolve := e.resolver(ctx)
	if tid, err := resolve(key); !errors.Is(err, tenant.ErrUnknown) {
		t.Fatalf("the proxy resolves the revoked key: %q, %v", tid, err)
	}
	if tid, err := resolve(first); err != nil || tid != id {
		t.Fatalf("the other key: %q, %v", tid, err)
	}
}

// TestPlanChangesOnTwoWorkersEndConsistent: worker 2 commits pro and is
// about to write it to Redis when worker 1 commits mini. Worker 1's
// write-through waits for worker 2's, so Redis ends with PostgreSQL's plan.
func TestPlanChangesOnTwoWorkersEndConsistent(t *testing.T) {
	e := setup(t)
	id, _ := e.createTenant("Plans", "free")
	gate, _, srv2 := e.gatedWorker()
	ctx := testCtx(t)
	path := "/admin/v1/tenants/" + id + "/plan"

	gate.arm()
	toPro := callAsync(srv2, "PUT", path, `{"plan":"pro"}`)
	gate.waitEntered(t)

	toMini := callAsync(e.srv, "PUT", path, `{"plan":"mini"}`)
	eventually(t, "worker 1's change is committed in postgres", func() bool {
		s, err := e.db.GetSubscription(ctx, id)
		return err == nil && s.Plan == "mini"
	})
	pending(t, toMini, 300*time.Millisecond, "worker 1's plan change")
	gate.open()
	for _, c := range []struct {
		ch   <-chan callResult
		what string
	}{{toPro, "worker 2's change"}, {toMini, "worker 1's change"}} {
		if r := answer(t, c.ch, c.what); r.status != 200 {
			t.Fatalf("%s: %d %v", c.what, r.status, r.body)
		}
	}

	sub, err := e.db.GetSubscription(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if ent := e.ent(id); sub.Plan != "mini" || ent["plan"] != sub.Plan || ent["l:agents"] != "2" {
		t.Fatalf("redis has %v, postgres %q", ent, sub.Plan)
	}
}

// TestIssuedKeyRevokedBeforeItsWriteThrough: a key is listed from its
// commit on, so it can be revoked (and its Redis step run) before the
// issuing call's write-through gets the tenant's lock; that write-through
// must not SET the revoked key.
func TestIssuedKeyRevokedBeforeItsWriteThrough(t *testing.T) {
	e := setup(t)
	id, _ := e.createTenant("Issue", "free")
	gate, worker2, _ := e.gatedWorker()
	ctx := testCtx(t)

	synced := syncHeld(t, gate, worker2, ctx, id)

	issued := callAsync(e.srv, "POST", "/admin/v1/tenants/"+id+"/keys", "")
	var keyID string
	eventually(t, "the new key is committed", func() bool {
		keys, err := e.db.ListAPIKeys(ctx, id)
		if err != nil || len(keys) != 2 {
			return false
		}
		keyID = keys[1].ID
		return true
	})
	// Another worker revokes it and runs its Redis step first.
	hash, err := e.db.APIKeyHash(ctx, id, keyID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.RevokeAPIKey(ctx, id, keyID); err != nil {
		t.Fatal(err)
	}
	if err := tenant.RevokeKeyHash(ctx, e.rdb, hash); err != nil && !errors.Is(err, tenant.ErrUnknown) {
		t.Fatal(err)
	}
	pending(t, issued, 300*time.Millisecond, "the issue")
	gate.open()
	if err := <-synced; err != nil {
		t.Fatalf("worker 2's sync: %v", err)
	}
	r := answer(t, issued, "issue")
	if r.status != 201 || tenant.HashKey(str(r.body["api_key"])) != hash {
		t.Fatalf("issue: %d %v", r.status, r.body)
	}
	if n, err := e.rdb.Exists(ctx, "tg:apikey:"+hash).Result(); err != nil || n != 0 {
		t.Fatalf("the revoked key was written to redis: %d, %v", n, err)
	}
}
