package quota

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/config"
)

func TestReserveOutcomes(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	clock := newFakeClock(utc(2025, 5, 14, 12, 0, 0))
	s := newStore(t, rdb, tc.Config, WithClock(clock.Now))
	_, mayEnd := Period(0, clock.Now())

	type want struct {
		outcome  Outcome
		feature  *config.Feature
		plan     string
		current  int64
		limit    int64
		ceiling  int64
		warning  bool
		reserved int64
		reset    time.Time
	}
	tests := []struct {
		name    string
		plan    string
		limits  map[string]int64
		unknown bool // no entitlement written
		check   Check
		before  int // identical reserves made first
		want    want
		// usage of the meter's feature after the checked reserve
		usage int64
	}{
		{name: "metered first", plan: "free", check: Check{Meter: fixed(tc.messages, 1), Amount: 1},
			want: want{Admitted, tc.messages, "", 1, 10, 10, false, 1, mayEnd}, usage: 1},
		{name: "metered below warning", plan: "free", check: Check{Meter: fixed(tc.messages, 1), Amount: 1}, before: 6,
			want: want{Admitted, tc.messages, "", 7, 10, 10, false, 1, mayEnd}, usage: 7},
		{name: "metered 8th of 10 warns", plan: "free", check: Check{Meter: fixed(tc.messages, 1), Amount: 1}, before: 7,
			want: want{Admitted, tc.messages, "", 8, 10, 10, true, 1, mayEnd}, usage: 8},
		{name: "metered last one admitted", plan: "free", check: Check{Meter: fixed(tc.messages, 1), Amount: 1}, before: 9,
			want: want{Admitted, tc.messages, "", 10, 10, 10, true, 1, mayEnd}, usage: 10},
		{name: "metered over limit", plan: "free", check: Check{Meter: fixed(tc.messages, 1), Amount: 1}, before: 10,
			want: want{OverLimit, tc.messages, "Free", 10, 10, 10, true, 0, mayEnd}, usage: 10},
		{name: "amount must fit whole", plan: "free", check: Check{Meter: fixed(tc.messages, 4), Amount: 4}, before: 2,
			want: want{OverLimit, tc.messages, "Free", 8, 10, 10, true, 0, mayEnd}, usage: 8},
		{name: "amount fits exactly", plan: "free", check: Check{Meter: fixed(tc.messages, 5), Amount: 5}, before: 1,
			want: want{Admitted, tc.messages, "", 10, 10, 10, true, 5, mayEnd}, usage: 10},
		{name: "grace admits the 11th of 10", plan: "free", check: Check{Meter: fixed(tc.apiCalls, 1), Amount: 1}, before: 10,
			want: want{Admitted, tc.apiCalls, "", 11, 10, 11, true, 1, mayEnd}, usage: 11},
		{name: "grace refuses the 12th", plan: "free", check: Check{Meter: fixed(tc.apiCalls, 1), Amount: 1}, before: 11,
			want: want{OverLimit, tc.apiCalls, "Free", 11, 10, 11, true, 0, mayEnd}, usage: 11},
		{name: "unlimited still counts", plan: "pro", check: Check{Meter: fixed(tc.messages, 1000), Amount: 1000}, before: 3,
			want: want{Admitted, tc.messages, "", 4000, -1, -1, false, 1000, mayEnd}, usage: 4000},
		{name: "per-tenant override", plan: "free", limits: map[string]int64{"messages": 2}, check: Check{Meter: fixed(tc.messages, 1), Amount: 1}, before: 2,
			want: want{OverLimit, tc.messages, "Free", 2, 2, 2, true, 0, mayEnd}, usage: 2},
		{name: "override to unlimited", plan: "free", limits: map[string]int64{"messages": -1}, check: Check{Meter: fixed(tc.messages, 1), Amount: 1}, before: 20,
			want: want{Admitted, tc.messages, "", 21, -1, -1, false, 1, mayEnd}, usage: 21},
		{name: "gauge create", plan: "free", check: Check{Meter: fixed(tc.agents, 1), Amount: 1}, before: 4,
			want: want{Admitted, tc.agents, "", 5, 5, 5, true, 1, time.Time{}}, usage: 5},
		{name: "gauge full", plan: "free", check: Check{Meter: fixed(tc.agents, 1), Amount: 1}, before: 5,
			want: want{OverLimit, tc.agents, "Free", 5, 5, 5, true, 0, time.Time{}}, usage: 5},
		// Without flags a delete is not checked: the limit comes with Commit.
		{name: "gauge delete reserves nothing", plan: "free", check: Check{Meter: fixed(tc.agents, -1), Amount: -1},
			want: want{Admitted, tc.agents, "", 0, -1, -1, false, 0, time.Time{}}, usage: 0},
		{name: "gauge delete of an unknown tenant is not checked", unknown: true, check: Check{Meter: fixed(tc.agents, -1), Amount: -1},
			want: want{Admitted, tc.agents, "", 0, -1, -1, false, 0, time.Time{}}},
		{name: "gauge delete with a flag is checked", plan: "mini", check: Check{Meter: fixed(tc.agents, -1), Amount: -1, Flags: []*config.Feature{tc.integrations}},
			want: want{Admitted, tc.agents, "", 0, 20, 20, false, 0, time.Time{}}, usage: 0},
		{name: "gauge delete with a flag off", plan: "free", check: Check{Meter: fixed(tc.agents, -1), Amount: -1, Flags: []*config.Feature{tc.integrations}},
			want: want{outcome: Locked, feature: tc.integrations, plan: "Free"}, usage: 0},
		{name: "response amount reserves nothing", plan: "free", check: Check{Meter: fromResponse(tc.tokens), Amount: 50},
			want: want{Admitted, tc.tokens, "", 0, 10, 10, false, 0, mayEnd}, usage: 0},
		{name: "flags all on", plan: "mini", check: Check{Flags: []*config.Feature{tc.integrations}},
			want: want{outcome: Admitted}},
		{name: "flag off", plan: "free", check: Check{Flags: []*config.Feature{tc.integrations}},
			want: want{outcome: Locked, feature: tc.integrations, plan: "Free"}},
		{name: "second flag off, before meter", plan: "mini",
			check: Check{Meter: fixed(tc.messages, 1), Amount: 1, Flags: []*config.Feature{tc.integrations, tc.autoReply}},
			want:  want{outcome: Locked, feature: tc.autoReply, plan: "Mini", reset: mayEnd}, usage: 0},
		{name: "flags on and meter", plan: "pro",
			check: Check{Meter: fixed(tc.messages, 1), Amount: 1, Flags: []*config.Feature{tc.integrations, tc.autoReply}},
			want:  want{Admitted, tc.messages, "", 1, -1, -1, false, 1, mayEnd}, usage: 1},
		{name: "unknown tenant wins", unknown: true,
			check: Check{Meter: fixed(tc.messages, 1), Amount: 1, Flags: []*config.Feature{tc.integrations}},
			want:  want{outcome: UnknownTenant, feature: tc.messages, reset: mayEnd}},
		{name: "unknown tenant flags only", unknown: true, check: Check{},
			want: want{outcome: UnknownTenant}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var id string
			if tt.unknown {
				id = randomTenant(t)
				cleanupTenant(t, rdb, id)
			} else {
				id = newTenant(t, s, rdb, tc.PlanBySlug[tt.plan], 0, tt.limits)
			}
			c := tt.check
			c.TenantID = id
			for i := range tt.before {
				if d := mustReserve(t, s, &c); d.Outcome != Admitted {
					t.Fatalf("reserve %d before the checked one: %v", i+1, d.Outcome)
				}
			}
			d := mustReserve(t, s, &c)
			got := want{d.Outcome, d.Feature, d.PlanName, d.Current, d.Limit, d.Ceiling, d.Warning, d.Reserved, d.Reset}
			if got != tt.want {
				t.Errorf("decision\n got %+v\nwant %+v", got, tt.want)
			}
			if c.Meter != nil && !tt.unknown {
				if n := usage(t, s, id, c.Meter.Feature); n != tt.usage {
					t.Errorf("usage = %d, want %d", n, tt.usage)
				}
			}
		})
	}
}

// TestGaugeDeleteCommit: a delete's Commit takes the units off in one
// round trip (the Reserve before it sends nothing) and reports the usage
// after it with the limit, for the response's headers.
func TestGaugeDeleteCommit(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()
	type want struct {
		current, limit, ceiling int64
		warning                 bool
		usage                   int64 // the gauge afterwards
	}
	tests := []struct {
		name      string
		plan      string // "" for a tenant without entitlement
		gauge     string // the gauge's value before, "" for none, "(list)" a list
		entString bool   // the entitlement is a string, not a hash
		limit     string // l:agents, "" for the plan's
		amount    int64  // what Commit is given
		want      want
	}{
		{name: "one of five", plan: "free", gauge: "5", amount: -1, want: want{4, 5, 5, true, 4}},
		{name: "positive amount", plan: "free", gauge: "5", amount: 2, want: want{3, 5, 5, false, 3}},
		{name: "never below zero", plan: "free", gauge: "2", amount: -3, want: want{0, 5, 5, false, 0}},
		{name: "no gauge yet", plan: "free", amount: -1, want: want{0, 5, 5, false, 0}},
		{name: "unlimited", plan: "pro", gauge: "7", amount: -1, want: want{6, -1, -1, false, 6}},
		{name: "no entitlement still counts", gauge: "3", amount: -1, want: want{2, -1, -1, false, 2}},
		{name: "malformed gauge changes nothing", plan: "free", gauge: "x", amount: -1, want: want{0, -1, -1, false, -1}},
		{name: "gauge DECRBY refuses changes nothing", plan: "free", gauge: "5.0", amount: -1, want: want{0, -1, -1, false, -1}},
		{name: "gauge of another type changes nothing", plan: "free", gauge: "(list)", amount: -1, want: want{0, -1, -1, false, -1}},
		{name: "malformed limit still counts", plan: "free", gauge: "3", limit: "inf", amount: -1, want: want{2, -1, -1, false, 2}},
		{name: "fractional limit still counts", plan: "free", gauge: "3", limit: "4.5", amount: -1, want: want{2, -1, -1, false, 2}},
		{name: "entitlement of another type still counts", plan: "free", gauge: "3", entString: true, amount: -1, want: want{2, -1, -1, false, 2}},
	}
	// Loaded first, so the first delete is not counted as NOSCRIPT and
	// EVAL on a server that has not seen the script yet.
	if err := redis.NewScript(gaugeDeleteSrc).Load(ctx, rdb).Err(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var id string
			if tt.plan == "" {
				id = randomTenant(t)
				cleanupTenant(t, rdb, id)
			} else {
				id = newTenant(t, s, rdb, tc.PlanBySlug[tt.plan], 0, nil)
			}
			key := counterKey(id, s.info(tc.agents), 0)
			switch tt.gauge {
			case "":
			case "(list)":
				if err := rdb.RPush(ctx, key, "5").Err(); err != nil {
					t.Fatal(err)
				}
			default:
				if err := rdb.Set(ctx, key, tt.gauge, 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if tt.limit != "" {
				if err := rdb.HSet(ctx, entKey(id), "l:agents", tt.limit).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if tt.entString {
				if err := rdb.Set(ctx, entKey(id), "free", 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			sent0 := s.PipelinedCommands()
			// The route's amount is negative; Commit takes either sign.
			n := -max(tt.amount, -tt.amount)
			c := &Check{TenantID: id, Meter: fixed(tc.agents, n), Amount: n}
			d := mustReserve(t, s, c)
			if n := s.PipelinedCommands() - sent0; n != 0 {
				t.Fatalf("the delete's Reserve sent %d commands, want 0", n)
			}
			s.Commit(ctx, &d, tt.amount)
			if n := s.PipelinedCommands() - sent0; n != 1 {
				t.Errorf("the delete sent %d commands, want 1", n)
			}
			got := want{d.Current, d.Limit, d.Ceiling, d.Warning, 0}
			raw, err := rdb.Get(ctx, key).Result()
			switch {
			case err == redis.Nil:
			case tt.gauge == "(list)":
				if n, err := rdb.LLen(ctx, key).Result(); err != nil || n != 1 {
					t.Errorf("the list gauge holds %d, %v; want it unchanged", n, err)
				}
				got.usage = -1
			case err != nil:
				t.Fatal(err)
			case raw == tt.gauge && tt.want.usage == -1:
				got.usage = -1 // malformed and unchanged
			default:
				got.usage, _ = strconv.ParseInt(raw, 10, 64)
			}
			if got != tt.want {
				t.Errorf("after the delete\n got %+v\nwant %+v", got, tt.want)
			}
			if s.hasPending() {
				t.Error("counts left pending with Redis up")
			}
		})
	}
}

func TestReleaseAndCommit(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()
	free := tc.PlanBySlug["free"]

	tests := []struct {
		name  string
		meter *config.Meter
		// set, when >= 0, sets the counter before the reserve
		set    int64
		settle func(d *Decision)
		usage  int64
		// next is the outcome of one more reserve of the same meter
		next Outcome
	}{
		{name: "release gives back", meter: fixed(tc.messages, 3), set: -1,
			settle: func(d *Decision) { s.Release(ctx, d) }, usage: 0, next: Admitted},
		{name: "release twice gives back once", meter: fixed(tc.messages, 3), set: 5,
			settle: func(d *Decision) { s.Release(ctx, d); s.Release(ctx, d) }, usage: 5, next: Admitted},
		{name: "release frees a full gauge", meter: fixed(tc.agents, 1), set: 4,
			settle: func(d *Decision) { s.Release(ctx, d) }, usage: 4, next: Admitted},
		{name: "commit after reserve charges nothing more", meter: fixed(tc.messages, 3), set: -1,
			settle: func(d *Decision) { s.Commit(ctx, d, 3) }, usage: 3, next: Admitted},
		{name: "response amount charged on commit", meter: fromResponse(tc.tokens), set: 2,
			settle: func(d *Decision) { s.Commit(ctx, d, 7) }, usage: 9, next: Admitted},
		{name: "response amount may pass the ceiling once", meter: fromResponse(tc.tokens), set: 9,
			settle: func(d *Decision) { s.Commit(ctx, d, 7) }, usage: 16, next: OverLimit},
		{name: "response amount of zero", meter: fromResponse(tc.tokens), set: -1,
			settle: func(d *Decision) { s.Commit(ctx, d, 0) }, usage: 0, next: Admitted},
		{name: "gauge delete decrements", meter: fixed(tc.agents, -1), set: 5,
			settle: func(d *Decision) { s.Commit(ctx, d, -1) }, usage: 4, next: Admitted},
		{name: "gauge delete with positive amount decrements", meter: fixed(tc.agents, -2), set: 5,
			settle: func(d *Decision) { s.Commit(ctx, d, 2) }, usage: 3, next: Admitted},
		{name: "gauge delete never below zero", meter: fixed(tc.agents, -3), set: 1,
			settle: func(d *Decision) { s.Commit(ctx, d, -3); s.Commit(ctx, d, -3) }, usage: 0, next: Admitted},
		{name: "gauge delete of nothing", meter: fixed(tc.agents, -1), set: -1,
			settle: func(d *Decision) { s.Commit(ctx, d, -1) }, usage: 0, next: Admitted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := newTenant(t, s, rdb, free, 0, nil)
			if tt.set >= 0 {
				key := counterKey(id, s.info(tt.meter.Feature), mustPeriodStart(s))
				if err := rdb.Set(ctx, key, tt.set, time.Hour).Err(); err != nil {
					t.Fatal(err)
				}
			}
			c := &Check{TenantID: id, Meter: tt.meter, Amount: tt.meter.Amount}
			d := mustReserve(t, s, c)
			if d.Outcome != Admitted {
				t.Fatalf("reserve: %v", d.Outcome)
			}
			tt.settle(&d)
			if n := usage(t, s, id, tt.meter.Feature); n != tt.usage {
				t.Errorf("usage = %d, want %d", n, tt.usage)
			}
			next := &Check{TenantID: id, Meter: tt.meter, Amount: tt.meter.Amount}
			if tt.meter.Source != config.AmountResponseHeader && tt.meter.Amount > 0 {
				next.Meter, next.Amount = fixed(tt.meter.Feature, 1), 1
			}
			if d := mustReserve(t, s, next); d.Outcome != tt.next {
				t.Errorf("next reserve: %v, want %v", d.Outcome, tt.next)
			}
			if s.hasPending() {
				t.Errorf("counts left pending with Redis up")
			}
		})
	}
}

func mustPeriodStart(s *Store) int64 {
	start, _ := Period(0, s.now())
	return start.Unix()
}

func TestReleaseNeverBelowZero(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()
	id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, nil)

	d := mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tc.messages, 5), Amount: 5})
	// An admin reset the counter while the request was upstream.
	key := counterKey(id, s.info(tc.messages), mustPeriodStart(s))
	if err := rdb.Set(ctx, key, 2, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	s.Release(ctx, &d)
	if n := usage(t, s, id, tc.messages); n != 0 {
		t.Errorf("usage after release = %d, want 0", n)
	}
}

func TestPlanChangeAppliesToNextReserve(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()
	id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, nil)
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1, Flags: []*config.Feature{tc.integrations}}

	if d := mustReserve(t, s, c); d.Outcome != Locked || d.PlanName != "Free" {
		t.Fatalf("free: %v %q, want locked on Free", d.Outcome, d.PlanName)
	}
	c.Flags = nil
	for range 10 {
		mustReserve(t, s, c)
	}
	if d := mustReserve(t, s, c); d.Outcome != OverLimit {
		t.Fatalf("free 11th: %v, want over limit", d.Outcome)
	}

	if err := s.PutEntitlement(ctx, Entitlement{TenantID: id, Plan: tc.PlanBySlug["mini"]}); err != nil {
		t.Fatal(err)
	}
	c.Flags = []*config.Feature{tc.integrations}
	d := mustReserve(t, s, c)
	if d.Outcome != Admitted || d.Limit != 100 || d.Current != 11 {
		t.Fatalf("after upgrade: %v current %d limit %d, want admitted 11/100", d.Outcome, d.Current, d.Limit)
	}

	// Downgrading keeps the period's usage: now far over the Free limit.
	if err := s.PutEntitlement(ctx, Entitlement{TenantID: id, Plan: tc.PlanBySlug["free"]}); err != nil {
		t.Fatal(err)
	}
	c.Flags = nil
	if d := mustReserve(t, s, c); d.Outcome != OverLimit || d.Limit != 10 || d.Current != 11 {
		t.Fatalf("after downgrade: %v current %d limit %d, want over limit 11/10", d.Outcome, d.Current, d.Limit)
	}
}

func TestAnchorChangeFromAnotherInstance(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	clock := newFakeClock(utc(2025, 5, 20, 0, 0, 0))
	a := newStore(t, rdb, tc.Config, WithClock(clock.Now))
	b := newStore(t, testClient(t), tc.Config, WithClock(clock.Now))
	id := newTenant(t, a, rdb, tc.PlanBySlug["free"], 0, nil)
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}

	d := mustReserve(t, a, c)
	if want := utc(2025, 6, 1, 0, 0, 0); !d.Reset.Equal(want) {
		t.Fatalf("calendar reset = %s, want %s", d.Reset, want)
	}

	anchor := utc(2025, 1, 10, 0, 0, 0).Unix()
	if err := b.PutEntitlement(context.Background(), Entitlement{TenantID: id, Plan: tc.PlanBySlug["free"], Anchor: anchor}); err != nil {
		t.Fatal(err)
	}
	d = mustReserve(t, a, c)
	if want := utc(2025, 6, 10, 0, 0, 0); !d.Reset.Equal(want) {
		t.Fatalf("reset after anchor change = %s, want %s", d.Reset, want)
	}
	if d.Current != 1 {
		t.Errorf("current in the new period = %d, want 1", d.Current)
	}
	if _, cached := a.anchorOf(id); cached != anchor {
		t.Errorf("cached anchor = %d, want %d", cached, anchor)
	}
	key := counterKey(id, a.info(tc.messages), utc(2025, 5, 10, 0, 0, 0).Unix())
	if n, err := rdb.Get(context.Background(), key).Int64(); err != nil || n != 1 {
		t.Errorf("new period counter = %d, %v; want 1", n, err)
	}
}

func TestPeriodRollover(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	clock := newFakeClock(utc(2025, 1, 31, 23, 59, 0))
	s := newStore(t, rdb, tc.Config, WithClock(clock.Now))
	ctx := context.Background()
	id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, nil)
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}

	for range 10 {
		mustReserve(t, s, c)
	}
	if d := mustReserve(t, s, c); d.Outcome != OverLimit {
		t.Fatalf("january: %v, want over limit", d.Outcome)
	}
	jan := counterKey(id, s.info(tc.messages), utc(2025, 1, 1, 0, 0, 0).Unix())
	checkTTL(t, rdb, jan, utc(2025, 2, 1, 0, 0, 0).Add(counterGrace).Sub(clock.Now()))

	clock.Set(utc(2025, 2, 1, 0, 0, 0))
	d := mustReserve(t, s, c)
	if d.Outcome != Admitted || d.Current != 1 {
		t.Fatalf("february: %v current %d, want admitted 1", d.Outcome, d.Current)
	}
	if want := utc(2025, 3, 1, 0, 0, 0); !d.Reset.Equal(want) {
		t.Errorf("february reset = %s, want %s", d.Reset, want)
	}
	feb := counterKey(id, s.info(tc.messages), utc(2025, 2, 1, 0, 0, 0).Unix())
	checkTTL(t, rdb, feb, utc(2025, 3, 1, 0, 0, 0).Add(counterGrace).Sub(clock.Now()))
	if n, err := rdb.Get(ctx, jan).Int64(); err != nil || n != 10 {
		t.Errorf("january counter = %d, %v; want 10 kept until it expires", n, err)
	}
}

func checkTTL(t *testing.T, rdb *redis.Client, key string, want time.Duration) {
	t.Helper()
	got, err := rdb.TTL(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("TTL %s: %v", key, err)
	}
	// Redis counts down in real time between the script and this read.
	if got > want || got < want-5*time.Second {
		t.Errorf("TTL %s = %s, want %s", key, got, want)
	}
}
