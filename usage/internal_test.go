package usage

import (
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestParseCounterKey(t *testing.T) {
	tests := []struct {
		key  string
		ok   bool
		want counter
	}{
		{"tg:{t1}:m:messages:1777593600", true, counter{tenant: "t1", feature: "messages", periodStart: 1777593600}},
		{"tg:{t1}:g:agents", true, counter{tenant: "t1", feature: "agents", gauge: true}},
		{"tg:{t1}:m:messages:1777593600:d:abc-1", false, counter{}}, // quota's reconcile marker
		{"tg:{t1}:g:agents:d:abc-1", false, counter{}},
		{"tg:{t1}:m:messages", false, counter{}},
		{"tg:{t1}:m:messages:x", false, counter{}},
		{"tg:{t1}:m:messages:1125899906842624", false, counter{}}, // past year 9999
		{"tg:{t1}:ent", false, counter{}},
		{"tg:{}:g:agents", false, counter{}},
		{"tg:{" + strings.Repeat("t", maxIDLen) + "}:g:agents", true, counter{tenant: strings.Repeat("t", maxIDLen), feature: "agents", gauge: true}},
		{"tg:{" + strings.Repeat("t", maxIDLen+1) + "}:g:agents", false, counter{}}, // a tenant id the ingest refuses
		{"tg:apikey:00", false, counter{}},
		{"", false, counter{}},
	}
	for _, tt := range tests {
		got, ok := parseCounterKey(tt.key)
		if tt.ok {
			tt.want.key = tt.key
		}
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseCounterKey(%q) = %+v, %v; want %+v, %v", tt.key, got, ok, tt.want, tt.ok)
		}
	}
}

func TestTouchAllocatesNothingWhenMarked(t *testing.T) {
	f := NewFlusher(nil, nil)
	key := "tg:{t1}:m:messages:1777593600"
	f.Touch(key)
	if n := testing.AllocsPerRun(1000, func() { f.Touch(key) }); n != 0 {
		t.Fatalf("Touch of a marked key allocates %v times", n)
	}
	f.Touch("")
	got := map[string]struct{}{}
	f.dirty.drainInto(got)
	if len(got) != 1 {
		t.Fatalf("dirty set = %v", got)
	}
}

// TestDrainWhileTouching: the flusher drains the dirty set while requests
// (and the quota store's lease reports) keep marking keys; every key
// marked is drained once, and a shard the previous drain emptied is not
// read while it is written (go test -race).
func TestDrainWhileTouching(t *testing.T) {
	f := NewFlusher(nil, nil)
	const keys = 20000
	got := map[string]struct{}{}
	f.Touch("tg:{t0}:g:agents")
	f.dirty.drainInto(got) // leaves that shard an empty map
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range keys {
			f.Touch("tg:{t" + strconv.Itoa(i) + "}:g:agents")
		}
	})
	for range 200 {
		f.dirty.drainInto(got)
	}
	wg.Wait()
	f.dirty.drainInto(got)
	if len(got) != keys {
		t.Fatalf("drained %d keys, want %d", len(got), keys)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	ok := Item{TenantID: "t", Feature: "messages", PeriodStart: 10, PeriodEnd: 20, Used: 1, ObservedAtUS: 1}
	tests := []struct {
		name  string
		edit  func(*Batch)
		field string
	}{
		{"valid", func(*Batch) {}, ""},
		{"gauge", func(b *Batch) { b.Items[0].PeriodStart, b.Items[0].PeriodEnd = 0, 0 }, ""},
		{"no id", func(b *Batch) { b.ID = "" }, "batch_id"},
		{"no proxy", func(b *Batch) { b.ProxyID = "" }, "proxy_id"},
		{"no epoch", func(b *Batch) { b.Epoch = 0 }, "epoch"},
		{"no tenant", func(b *Batch) { b.Items[0].TenantID = "" }, "items[0].tenant_id"},
		{"no feature", func(b *Batch) { b.Items[0].Feature = "" }, "items[0].feature"},
		{"negative", func(b *Batch) { b.Items[0].Used = -1 }, "items[0].used"},
		{"no time", func(b *Batch) { b.Items[0].ObservedAtUS = 0 }, "items[0].observed_at_us"},
		{"half a period", func(b *Batch) { b.Items[0].PeriodStart = 0 }, "items[0].period_start"},
		{"empty period", func(b *Batch) { b.Items[0].PeriodEnd = 10 }, "items[0].period_end"},
		{"start past 9999", func(b *Batch) { b.Items[0].PeriodStart, b.Items[0].PeriodEnd = 1<<50, 1<<50+1 }, "items[0].period_start"},
		{"end past 9999", func(b *Batch) { b.Items[0].PeriodEnd = 1 << 50 }, "items[0].period_end"},
		{"negative start", func(b *Batch) { b.Items[0].PeriodStart = -5 }, "items[0].period_start"},
		{"december 9999", func(b *Batch) { b.Items[0].PeriodStart, b.Items[0].PeriodEnd = 253399622400, 253402300800 }, ""},
	}
	for _, tt := range tests {
		b := Batch{ID: "b", ProxyID: "p", Epoch: 1, Items: []Item{ok}}
		tt.edit(&b)
		err := b.Validate()
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.field != "" && (err == nil || len(err.Error()) < len(tt.field) || err.Error()[:len(tt.field)] != tt.field):
			t.Errorf("%s: err = %v, want one naming %s", tt.name, err, tt.field)
		}
	}
}
