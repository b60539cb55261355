package billing

import (
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"
)

var (
	mayStart, mayEnd = MonthPeriod(fixedNow)
	aprStart, aprEnd = MonthPeriod(fixedNow.AddDate(0, -1, 0))
)

func item(tenantID, feature string, delta int64) UsageItem {
	return UsageItem{TenantID: tenantID, Feature: feature, PeriodStart: mayStart, PeriodEnd: mayEnd, Delta: delta}
}

func TestApplyUsageBatchTwiceCountsOnce(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	b := Batch{ID: "px1-000001", ProxyID: "px1", Items: []UsageItem{
		item("ten_a", "messages", 3), item("ten_a", "api_calls", 7), item("ten_b", "messages", 1),
	}}
	for i, want := range []bool{true, false, false} {
		applied, err := s.ApplyUsageBatch(ctx, b)
		if err != nil || applied != want {
			t.Fatalf("delivery %d: applied = %v, %v; want %v", i+1, applied, err, want)
		}
	}
	got, err := s.UsageFor(ctx, "ten_a", mayStart)
	if err != nil || !maps.Equal(got, map[string]int64{"messages": 3, "api_calls": 7}) {
		t.Fatalf("ten_a usage = %v, %v", got, err)
	}
	// A new batch adds on top.
	if applied, err := s.ApplyUsageBatch(ctx, Batch{ID: "px1-000002", ProxyID: "px1", Items: []UsageItem{item("ten_a", "messages", 2)}}); !applied || err != nil {
		t.Fatalf("second batch: %v, %v", applied, err)
	}
	if got, _ := s.UsageFor(ctx, "ten_a", mayStart); got["messages"] != 5 {
		t.Fatalf("messages = %d, want 5", got["messages"])
	}
}

func TestApplyUsageBatchConcurrentDuplicatesCountOnce(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	b := Batch{ID: "px2-42", ProxyID: "px2", Items: []UsageItem{item("ten_c", "messages", 10), item("ten_d", "messages", 4)}}
	const deliveries = 20
	var wg sync.WaitGroup
	applied := make([]bool, deliveries)
	errs := make([]error, deliveries)
	for i := range deliveries {
		wg.Go(func() { applied[i], errs[i] = s.ApplyUsageBatch(ctx, b) })
	}
	wg.Wait()
	n := 0
	for i := range deliveries {
		if errs[i] != nil {
			t.Fatalf("delivery %d: %v", i, errs[i])
		}
		if applied[i] {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d deliveries applied, want exactly 1", n)
	}
	for tid, want := range map[string]int64{"ten_c": 10, "ten_d": 4} {
		if got, _ := s.UsageFor(ctx, tid, mayStart); got["messages"] != want {
			t.Fatalf("%s messages = %d, want %d", tid, got["messages"], want)
		}
	}
}

func TestApplyUsageBatchConcurrentDistinctBatchesAllCount(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	const batches = 12
	var wg sync.WaitGroup
	errs := make([]error, batches)
	for i := range batches {
		// Items in opposite orders: the sorted upserts must not deadlock.
		items := []UsageItem{item("ten_x", "messages", 1), item("ten_y", "messages", 2)}
		if i%2 == 1 {
			items[0], items[1] = items[1], items[0]
		}
		wg.Go(func() {
			_, errs[i] = s.ApplyUsageBatch(ctx, Batch{ID: fmt.Sprintf("b-%d", i), ProxyID: "px", Items: items})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	x, _ := s.UsageFor(ctx, "ten_x", mayStart)
	y, _ := s.UsageFor(ctx, "ten_y", mayStart)
	if x["messages"] != batches || y["messages"] != 2*batches {
		t.Fatalf("x = %d, y = %d; want %d and %d", x["messages"], y["messages"], batches, 2*batches)
	}
}

func TestApplyUsageBatchValidation(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	ok := item("ten_v", "messages", 1)
	mod := func(f func(*UsageItem)) UsageItem { it := ok; f(&it); return it }
	tests := []struct {
		name string
		b    Batch
	}{
		{"no id", Batch{ProxyID: "px", Items: []UsageItem{ok}}},
		{"long id", Batch{ID: string(make([]byte, 129)), ProxyID: "px"}},
		{"no proxy", Batch{ID: "v1", Items: []UsageItem{ok}}},
		{"negative delta", Batch{ID: "v2", ProxyID: "px", Items: []UsageItem{ok, mod(func(it *UsageItem) { it.Delta = -1 })}}},
		{"no tenant", Batch{ID: "v3", ProxyID: "px", Items: []UsageItem{mod(func(it *UsageItem) { it.TenantID = "" })}}},
		{"no feature", Batch{ID: "v4", ProxyID: "px", Items: []UsageItem{mod(func(it *UsageItem) { it.Feature = "" })}}},
		{"inverted period", Batch{ID: "v5", ProxyID: "px", Items: []UsageItem{mod(func(it *UsageItem) { it.PeriodEnd = aprStart })}}},
		{"two ends for one period", Batch{ID: "v6", ProxyID: "px", Items: []UsageItem{ok, mod(func(it *UsageItem) { it.PeriodEnd = mayEnd.Add(time.Hour) })}}},
		{"too many items", Batch{ID: "v7", ProxyID: "px", Items: make([]UsageItem, MaxBatchItems+1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			applied, err := s.ApplyUsageBatch(ctx, tt.b)
			if applied || !errorsIs(err, ErrInvalid) {
				t.Fatalf("applied = %v, err = %v; want ErrInvalid", applied, err)
			}
		})
	}
	// A refused batch records nothing, so a corrected one with the same id applies.
	if n := count(t, s, `SELECT count(*) FROM usage_batches`); n != 0 {
		t.Fatalf("%d batch ids recorded by refused batches", n)
	}
	if n := count(t, s, `SELECT count(*) FROM usage`); n != 0 {
		t.Fatalf("%d usage rows written by refused batches", n)
	}
}

func TestApplyUsageBatchSumsAndSeparatesPeriods(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	april := UsageItem{TenantID: "ten_p", Feature: "messages", PeriodStart: aprStart, PeriodEnd: aprEnd, Delta: 9}
	b := Batch{ID: "sum-1", ProxyID: "px", Items: []UsageItem{
		item("ten_p", "messages", 2), item("ten_p", "messages", 3), april, item("ten_p", "ai_tokens", 0),
		// The same instant in another zone is the same period.
		{TenantID: "ten_p", Feature: "messages", PeriodStart: mayStart.In(time.FixedZone("X", 3600)), PeriodEnd: mayEnd, Delta: 1},
	}}
	if applied, err := s.ApplyUsageBatch(ctx, b); !applied || err != nil {
		t.Fatalf("apply: %v, %v", applied, err)
	}
	tests := []struct {
		name  string
		start time.Time
		want  map[string]int64
	}{
		{"may", mayStart, map[string]int64{"messages": 6}},
		{"april", aprStart, map[string]int64{"messages": 9}},
		{"june: nothing", mayEnd, map[string]int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.UsageFor(ctx, "ten_p", tt.start)
			if err != nil || !maps.Equal(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	// An empty batch is recorded (and so is deduplicated) but counts nothing.
	for i, want := range []bool{true, false} {
		if applied, err := s.ApplyUsageBatch(ctx, Batch{ID: "empty", ProxyID: "px"}); applied != want || err != nil {
			t.Fatalf("empty batch delivery %d: %v, %v", i, applied, err)
		}
	}
}

func TestUsageIsolatesTenants(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	b := Batch{ID: "iso", ProxyID: "px", Items: []UsageItem{item("ten_one", "messages", 5), item("ten_two", "messages", 50)}}
	if _, err := s.ApplyUsageBatch(ctx, b); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		tenant string
		want   map[string]int64
	}{
		{"ten_one", map[string]int64{"messages": 5}},
		{"ten_two", map[string]int64{"messages": 50}},
		{"ten_three", map[string]int64{}},
		{"ten_%", map[string]int64{}}, // no pattern matching on ids
	}
	for _, tt := range tests {
		t.Run(tt.tenant, func(t *testing.T) {
			got, err := s.UsageFor(ctx, tt.tenant, mayStart)
			if err != nil || !maps.Equal(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestPruneUsageBatches(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	if _, err := s.ApplyUsageBatch(ctx, Batch{ID: "old", ProxyID: "px"}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneUsageBatches(ctx, time.Now().Add(-time.Hour)); n != 0 || err != nil {
		t.Fatalf("prune of recent ids: %d, %v", n, err)
	}
	if n, err := s.PruneUsageBatches(ctx, time.Now().Add(time.Hour)); n != 1 || err != nil {
		t.Fatalf("prune: %d, %v", n, err)
	}
}
