package billing

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/tenant"
	"github.com/tollgate/tollgate/usage"
)

var (
	snapStart = time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC).Unix()
	snapEnd   = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC).Unix()
)

func snapBatch(id string, epoch int64, items ...usage.Item) usage.Batch {
	return usage.Batch{ID: id, ProxyID: "p1", Epoch: epoch, Items: items}
}

func messages(tid string, used, observed int64) usage.Item {
	return usage.Item{TenantID: tid, Feature: "messages", PeriodStart: snapStart, PeriodEnd: snapEnd,
		Used: used, ObservedAtUS: observed}
}

func agents(tid string, n, observed int64) usage.Item {
	return usage.Item{TenantID: tid, Feature: "agents", Used: n, ObservedAtUS: observed}
}

func beginEpoch(t *testing.T, s *Store) int64 {
	t.Helper()
	e, err := s.BeginEpoch(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func wantSnapshot(t *testing.T, s *Store, tid string, wantMessages, wantAgents int64) {
	t.Helper()
	u, err := s.UsageFor(testCtx(t), tid, time.Unix(snapStart, 0))
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.GaugesFor(testCtx(t), tid)
	if err != nil {
		t.Fatal(err)
	}
	if u["messages"] != wantMessages || g["agents"] != wantAgents {
		t.Fatalf("messages %d agents %d, want %d and %d", u["messages"], g["agents"], wantMessages, wantAgents)
	}
}

func TestApplySnapshotsOnceUnderDuplicatesAndConcurrency(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	epoch := beginEpoch(t, s)

	b := snapBatch("b1", epoch, messages("ten_a", 7, 100), agents("ten_a", 2, 100))
	for i, want := range []bool{true, false} {
		applied, err := s.ApplySnapshots(ctx, b)
		if err != nil || applied != want {
			t.Fatalf("delivery %d: applied=%v err=%v, want %v", i+1, applied, err, want)
		}
	}
	wantSnapshot(t, s, "ten_a", 7, 2)

	b2 := snapBatch("b2", epoch, messages("ten_a", 12, 200), agents("ten_a", 3, 200))
	var wg sync.WaitGroup
	var mu sync.Mutex
	appliedN := 0
	for range 20 {
		wg.Go(func() {
			applied, err := s.ApplySnapshots(ctx, b2)
			if err != nil {
				t.Errorf("concurrent delivery: %v", err)
			}
			if applied {
				mu.Lock()
				appliedN++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if appliedN != 1 {
		t.Fatalf("20 concurrent deliveries applied %d times, want 1", appliedN)
	}
	wantSnapshot(t, s, "ten_a", 12, 3)
	if n := count(t, s, `SELECT count(*) FROM usage_batches`); n != 2 {
		t.Fatalf("usage_batches has %d rows, want 2", n)
	}
}

func TestApplySnapshotsNewestWins(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	e1 := beginEpoch(t, s)

	steps := []struct {
		name         string
		batch        usage.Batch
		msgs, agents int64
	}{
		{"first", snapBatch("n1", e1, messages("ten_b", 30, 300), agents("ten_b", 4, 300)), 30, 4},
		{"older arrives later", snapBatch("n2", e1, messages("ten_b", 20, 200), agents("ten_b", 9, 200)), 30, 4},
		{"same instant", snapBatch("n3", e1, messages("ten_b", 99, 300)), 30, 4},
		{"in-batch duplicates keep the newest", snapBatch("n4", e1,
			messages("ten_b", 41, 410), messages("ten_b", 40, 400), agents("ten_b", 0, 410)), 41, 0},
	}
	for _, st := range steps {
		if _, err := s.ApplySnapshots(ctx, st.batch); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		wantSnapshot(t, s, "ten_b", st.msgs, st.agents)
	}

	// A new epoch (Redis restored, maybe with another clock) wins even
	// with an older Redis TIME, and the old epoch is refused.
	if err := s.CompleteEpoch(ctx, e1); err != nil {
		t.Fatal(err)
	}
	e2 := beginEpoch(t, s)
	if e2 == e1 {
		t.Fatalf("a completed epoch was reused")
	}
	if _, err := s.ApplySnapshots(ctx, snapBatch("n5", e2, messages("ten_b", 45, 5))); err != nil {
		t.Fatal(err)
	}
	wantSnapshot(t, s, "ten_b", 45, 0)
	_, err := s.ApplySnapshots(ctx, snapBatch("n6", e1, messages("ten_b", 1000, 9999)))
	if !errors.Is(err, usage.ErrStaleEpoch) {
		t.Fatalf("old epoch: err = %v, want ErrStaleEpoch", err)
	}
	if n := count(t, s, `SELECT count(*) FROM usage_batches WHERE batch_id = 'n6'`); n != 0 {
		t.Fatal("a stale batch was recorded")
	}
	wantSnapshot(t, s, "ten_b", 45, 0)
}

func TestApplySnapshotsRejectsInvalid(t *testing.T) {
	s := newStore(t)
	e := beginEpoch(t, s)
	for name, b := range map[string]usage.Batch{
		"no id":         snapBatch("", e, messages("t", 1, 1)),
		"negative used": snapBatch("x", e, messages("t", -1, 1)),
		"zero epoch":    snapBatch("x", 0, messages("t", 1, 1)),
	} {
		if _, err := s.ApplySnapshots(testCtx(t), b); !errors.Is(err, usage.ErrInvalidBatch) {
			t.Errorf("%s: err = %v, want ErrInvalidBatch", name, err)
		}
	}
}

func TestEpochsAndRestoreLock(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	if e, err := s.CurrentEpoch(ctx); err != nil || e != 0 {
		t.Fatalf("current epoch of a new database = %d, %v", e, err)
	}
	e1 := beginEpoch(t, s)
	if again := beginEpoch(t, s); again != e1 {
		t.Fatalf("an unfinished restore's epoch %d was not reused (got %d)", e1, again)
	}
	if err := s.CompleteEpoch(ctx, e1); err != nil {
		t.Fatal(err)
	}
	if e2 := beginEpoch(t, s); e2 <= e1 {
		t.Fatalf("new epoch %d after %d", e2, e1)
	}

	unlock, ok, err := s.LockRestore(ctx)
	if err != nil || !ok {
		t.Fatalf("first lock: ok=%v err=%v", ok, err)
	}
	if _, ok2, err := s.LockRestore(ctx); err != nil || ok2 {
		t.Fatalf("second lock while held: ok=%v err=%v", ok2, err)
	}
	unlock()
	unlock2, ok, err := s.LockRestore(ctx)
	if err != nil || !ok {
		t.Fatalf("lock after unlock: ok=%v err=%v", ok, err)
	}
	unlock2()
}

func TestRestoreSources(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	tn, key := mustTenant(t, s, "Acme", "mini")
	payg, _ := mustTenant(t, s, "Walk-in", "")
	rec, _, err := s.IssueAPIKey(ctx, tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeAPIKey(ctx, tn.ID, rec.ID); err != nil {
		t.Fatal(err)
	}

	gone, _ := mustTenant(t, s, "Gone", "pro")
	if _, err := s.pool.Exec(ctx, `UPDATE subscriptions SET status = 'canceled' WHERE tenant_id = $1`, gone.ID); err != nil {
		t.Fatal(err)
	}

	ts, err := s.RestoreTenants(ctx, "free")
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]usage.TenantState{}
	for _, x := range ts {
		byID[x.TenantID] = x
	}
	// A calendar month's subscription: calendar periods (anchor 0), as
	// the admin API writes it through.
	got := byID[tn.ID]
	if got.PlanSlug != "mini" || got.PlanName != "Mini" || got.Status != StatusActive || got.Anchor != 0 ||
		got.Limits["messages"] != 2500 || !got.Flags["integrations"] {
		t.Fatalf("restored tenant = %+v", got)
	}
	// Without a live subscription, never subscribed or canceled: the
	// default plan as stored, active, on calendar months.
	for _, id := range []string{payg.ID, gone.ID} {
		if p := byID[id]; p.PlanSlug != "free" || p.PlanName != "Free" || p.Status != StatusActive || p.Anchor != 0 ||
			p.Limits["messages"] != 250 || p.Flags["integrations"] {
			t.Fatalf("tenant without a live subscription = %+v", p)
		}
	}

	keys, err := s.RestoreKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var mine []usage.KeyHash
	for _, k := range keys {
		if k.TenantID == tn.ID {
			mine = append(mine, k)
		}
	}
	if len(mine) != 1 || mine[0].Hash != tenant.HashKey(key) {
		t.Fatalf("keys of %s = %+v, want only the unrevoked one", tn.ID, mine)
	}

	e := beginEpoch(t, s)
	old := usage.Item{TenantID: tn.ID, Feature: "messages", PeriodStart: snapStart - 31*86400, PeriodEnd: snapStart,
		Used: 5, ObservedAtUS: 1}
	if _, err := s.ApplySnapshots(ctx, snapBatch("r1", e, messages(tn.ID, 17, 1), agents(tn.ID, 2, 1), old)); err != nil {
		t.Fatal(err)
	}
	items, err := s.RestoreUsage(ctx, fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	want := []usage.Item{agents(tn.ID, 2, 1), messages(tn.ID, 17, 1)}
	if len(items) != len(want) || items[0] != want[0] || items[1] != want[1] {
		t.Fatalf("restore usage = %+v, want %+v (the ended period left out)", items, want)
	}
}
