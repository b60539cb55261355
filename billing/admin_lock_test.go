package billing

import (
	"context"
	"testing"
	"time"

	"github.com/tollgate/tollgate/tenant"
)

func lockWithin(t *testing.T, s *Store, id string, d time.Duration) (*TenantLock, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return s.LockTenant(ctx, id)
}

// TestLockTenant: one holder at a time per tenant, a wait bounded by its
// context, other tenants unaffected, and reads that see what was
// committed while the lock was awaited.
func TestLockTenant(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	acme, key := mustTenant(t, s, "Acme", "free")
	other, _ := mustTenant(t, s, "Other", "free")

	held, err := lockWithin(t, s, acme.ID, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	begun := time.Now()
	if l, err := lockWithin(t, s, acme.ID, 300*time.Millisecond); err == nil {
		l.Unlock()
		t.Fatal("a second holder got the lock")
	}
	if waited := time.Since(begun); waited > 3*time.Second {
		t.Fatalf("the refused wait took %v", waited)
	}
	l, err := lockWithin(t, s, other.ID, 2*time.Second)
	if err != nil {
		t.Fatalf("another tenant waited: %v", err)
	}
	l.Unlock()

	// A waiter reads the changes committed while it waited.
	got := make(chan *TenantLock, 1)
	go func() {
		l, err := lockWithin(t, s, acme.ID, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	time.Sleep(100 * time.Millisecond)
	if _, err := s.SetPlan(ctx, acme.ID, "mini", "test"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
		t.Fatal("the waiter got the lock while it was held")
	case <-time.After(200 * time.Millisecond):
	}
	held.Unlock()
	held.Unlock() // a second Unlock does nothing
	waiter := <-got
	if waiter == nil {
		t.FailNow()
	}
	defer waiter.Unlock()
	if sub, err := waiter.Subscription(ctx); err != nil || sub.Plan != "mini" {
		t.Fatalf("subscription under the lock: %+v, %v", sub, err)
	}
	if p, err := waiter.Plan(ctx, "mini"); err != nil || p.Slug != "mini" {
		t.Fatalf("plan under the lock: %+v, %v", p, err)
	}
	if live, revoked, err := waiter.KeyHashes(ctx); err != nil || len(live) != 1 || live[0] != tenant.HashKey(key) || len(revoked) != 0 {
		t.Fatalf("key hashes under the lock: %v %v, %v", live, revoked, err)
	}
	missing, err := lockWithin(t, s, "ten_missing", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer missing.Unlock()
	if _, err := missing.Subscription(ctx); !errorsIs(err, ErrTenantNotFound) {
		t.Fatalf("subscription of an unknown tenant: %v", err)
	}
	if _, _, err := missing.KeyHashes(ctx); !errorsIs(err, ErrTenantNotFound) {
		t.Fatalf("key hashes of an unknown tenant: %v", err)
	}
}

// TestLockTenantHolderGoneQuiet: a holder that stops talking inside its
// section loses the lock when its session is ended, its context's time and
// tenantLockIdleMargin after it took it.
func TestLockTenantHolderGoneQuiet(t *testing.T) {
	s := newStore(t)
	acme, _ := mustTenant(t, s, "Acme", "free")
	quiet, err := lockWithin(t, s, acme.ID, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(quiet.Unlock) // never called in time: the holder froze
	begun := time.Now()
	l, err := lockWithin(t, s, acme.ID, 3*tenantLockIdleMargin)
	if err != nil {
		t.Fatalf("the lock of a quiet holder was kept: %v", err)
	}
	l.Unlock()
	if waited := time.Since(begun); waited > 2*tenantLockIdleMargin {
		t.Fatalf("waited %v for the quiet holder's lock", waited)
	}
	// The ended session left no broken connection in the pool.
	if _, err := s.GetTenant(testCtx(t), acme.ID); err != nil {
		t.Fatal(err)
	}
}
