package quota

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/config"
)

// TestIntScriptFallsBackToEval: a script the server has never seen (as
// after a restart or SCRIPT FLUSH) still runs, through EVAL.
func TestIntScriptFallsBackToEval(t *testing.T) {
	rdb := testClient(t)
	ctx := context.Background()
	// A unique source, so no earlier run can have loaded it.
	key := "tg:{" + randomTenant(t) + "}:scripttest"
	t.Cleanup(func() { rdb.Del(context.Background(), key) })
	src := "-- " + key + "\nreturn {redis.call('INCRBY', KEYS[1], ARGV[1]), tonumber(ARGV[2])}"
	is := newIntScript(redis.NewScript(src), src)

	for i := range 2 { // the second call finds the script loaded by EVAL
		args := []any{nil, nil, 1, key, 5, 7}
		res, err := is.runSlice(ctx, rdb, args)
		if err != nil || len(res) != 2 || res[0] != int64(5*(i+1)) || res[1] != 7 {
			t.Fatalf("call %d: %v %v", i, res, err)
		}
	}

	isrc := "-- " + key + " int\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])"
	ii := newIntScript(redis.NewScript(isrc), isrc)
	n, err := ii.runInt(ctx, rdb, []any{nil, nil, 1, key, 1})
	if err != nil || n != 11 {
		t.Fatalf("runInt: %d %v, want 11", n, err)
	}
}

// TestReservePlanNameInReply: over-limit and locked replies carry any plan
// name byte for byte, also one the configuration does not know.
func TestReservePlanNameInReply(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()

	for _, name := range []string{"Free", "Équipe ✓ \"beta\"", strings.Repeat("Enterprise ", 10), ""} {
		id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, map[string]int64{"messages": 0})
		if err := rdb.HSet(ctx, entKey(id), "plan_name", name).Err(); err != nil {
			t.Fatal(err)
		}
		d := mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1})
		if d.Outcome != OverLimit || d.PlanName != name {
			t.Errorf("over limit: %v %q, want %q", d.Outcome, d.PlanName, name)
		}
		d = mustReserve(t, s, &Check{TenantID: id, Flags: []*config.Feature{tc.integrations}})
		if d.Outcome != Locked || d.PlanName != name || d.Feature != tc.integrations {
			t.Errorf("locked: %v %q %v, want %q", d.Outcome, d.PlanName, d.Feature, name)
		}
	}
}

// TestReserveHashWithoutPlan: any entitlement hash means a known tenant,
// even one missing the plan field the script reads first.
func TestReserveHashWithoutPlan(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()
	id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, nil)
	if err := rdb.HDel(ctx, entKey(id), "plan").Err(); err != nil {
		t.Fatal(err)
	}
	if d := mustReserve(t, s, &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}); d.Outcome != Admitted || d.Current != 1 {
		t.Errorf("without plan field: %v %d, want admitted 1", d.Outcome, d.Current)
	}
	if d := mustReserve(t, s, &Check{TenantID: randomTenant(t), Meter: fixed(tc.messages, 1), Amount: 1}); d.Outcome != UnknownTenant {
		t.Errorf("no hash: %v, want unknown tenant", d.Outcome)
	}
}

// TestReserveAnchorText: an anchor written in another decimal form is the
// same anchor; one that is no integer fails the request with the fail mode.
func TestReserveAnchorText(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	clock := newFakeClock(utc(2025, 5, 14, 12, 0, 0))
	s := newStore(t, rdb, tc.Config, WithClock(clock.Now))
	ctx := context.Background()
	anchor := utc(2025, 1, 10, 0, 0, 0).Unix()
	id := newTenant(t, s, rdb, tc.PlanBySlug["free"], anchor, nil)
	c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}

	if err := rdb.HSet(ctx, entKey(id), "anchor", "00"+strconv.FormatInt(anchor, 10)).Err(); err != nil {
		t.Fatal(err)
	}
	d := mustReserve(t, s, c)
	if want := utc(2025, 6, 10, 0, 0, 0); d.Outcome != Admitted || !d.Reset.Equal(want) {
		t.Errorf("padded anchor: %v reset %s, want admitted, %s", d.Outcome, d.Reset, want)
	}

	if err := rdb.HSet(ctx, entKey(id), "anchor", "soon").Err(); err != nil {
		t.Fatal(err)
	}
	var bad Decision
	if err := s.Reserve(ctx, c, &bad); err == nil || bad.Outcome != FailedOpen {
		t.Errorf("malformed anchor: %v %v, want an error and failed open", bad.Outcome, err)
	}
}

// TestReserveSetsTTLOnCreate: the counter gets its TTL from the reserve
// that creates it, with a finite limit and unlimited alike.
func TestReserveSetsTTLOnCreate(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	clock := newFakeClock(utc(2025, 5, 14, 12, 0, 0))
	s := newStore(t, rdb, tc.Config, WithClock(clock.Now))
	want := utc(2025, 6, 1, 0, 0, 0).Add(counterGrace).Sub(clock.Now())
	for _, plan := range []string{"free", "pro"} {
		id := newTenant(t, s, rdb, tc.PlanBySlug[plan], 0, nil)
		c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}
		for range 3 {
			mustReserve(t, s, c)
		}
		key := counterKey(id, s.info(tc.messages), utc(2025, 5, 1, 0, 0, 0).Unix())
		checkTTL(t, rdb, key, want)
		if n := usage(t, s, id, tc.messages); n != 3 {
			t.Errorf("%s: usage %d, want 3", plan, n)
		}
	}
}

func TestBoxedCaches(t *testing.T) {
	for i := range 20000 {
		want := "tg:{t" + strconv.Itoa(i) + "}:ent"
		s, v := boxedString([]byte(want))
		if s != want || v.(string) != want {
			t.Fatalf("boxedString(%q) = %q, %v", want, s, v)
		}
	}
	for _, n := range []int64{0, 1, 255, 256, 512, -1, -256, 1 << 40, 1<<40 + 256, 3_000_000} {
		for range 2 {
			if v := boxedInt(n); v.(int64) != n {
				t.Fatalf("boxedInt(%d) = %v", n, v)
			}
		}
	}
}

// TestReserveKeyOfAnotherType: a counter or entitlement key of another
// type than Tollgate writes fails the request with the fail mode and an
// error naming it, counts nothing and leaves the key as it was.
func TestReserveKeyOfAnotherType(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()
	tests := []struct {
		name    string
		check   Check
		counter bool // spoil the meter's counter, else the entitlement
		value   func(key string) error
		want    Outcome
		err     string
	}{
		{"metered counter is a list", Check{Meter: fixed(tc.messages, 1), Amount: 1}, true,
			func(k string) error { return rdb.RPush(ctx, k, "1").Err() }, FailedOpen, "malformed counter "},
		{"response amount counter is a hash", Check{Meter: fromResponse(tc.tokens)}, true,
			func(k string) error { return rdb.HSet(ctx, k, "n", "1").Err() }, FailedOpen, "malformed counter "},
		{"gauge is a set", Check{Meter: fixed(tc.agents, 1), Amount: 1}, true,
			func(k string) error { return rdb.SAdd(ctx, k, "1").Err() }, Unavailable, "malformed counter "},
		{"entitlement is a string", Check{Meter: fixed(tc.messages, 1), Amount: 1}, false,
			func(k string) error { return rdb.Set(ctx, k, "free", 0).Err() }, FailedOpen, "not a hash"},
		{"entitlement is a list, flags only", Check{Flags: []*config.Feature{tc.integrations}}, false,
			func(k string) error { return rdb.RPush(ctx, k, "free").Err() }, Unavailable, "not a hash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := newTenant(t, s, rdb, tc.PlanBySlug["mini"], 0, nil)
			key := entKey(id)
			if tt.counter {
				var start int64
				if tt.check.Meter.Feature.Kind == config.Metered {
					start = mustPeriodStart(s)
				}
				key = counterKey(id, s.info(tt.check.Meter.Feature), start)
			} else if err := rdb.Del(ctx, key).Err(); err != nil {
				t.Fatal(err)
			}
			if err := tt.value(key); err != nil {
				t.Fatal(err)
			}
			typ := rdb.Type(ctx, key).Val()
			c := tt.check
			c.TenantID = id
			var d Decision
			err := s.Reserve(ctx, &c, &d)
			if err == nil || !strings.Contains(err.Error(), tt.err) || d.Outcome != tt.want {
				t.Errorf("Reserve: %v %v, want %v and an error containing %q", d.Outcome, err, tt.want, tt.err)
			}
			if got := rdb.Type(ctx, key).Val(); got != typ {
				t.Errorf("the key is a %s now, was a %s", got, typ)
			}
		})
	}
}

// TestReserveMalformedNumbers: a limit or counter in Redis that is not an
// integer within +-2^53 fails the request with the fail mode and an error
// naming it, and counts nothing; NaN and infinite limits admit nothing.
// Texts Go never writes but tonumber reads as an unambiguous integer are
// accepted where only read and malformed where INCRBY must write them.
func TestReserveMalformedNumbers(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()
	reserve := Check{Meter: fixed(tc.messages, 1), Amount: 1}
	response := Check{Meter: fromResponse(tc.messages)}
	const badLimit, badCounter = "malformed limit l:messages of tenant ", "malformed counter "
	tests := []struct {
		name    string
		check   Check
		limit   string // l:messages, "" for the plan's 10
		counter string // "" for none
		err     string // "" for admitted at current
		current int64
	}{
		{"limit nan", reserve, "nan", "", badLimit, 0},
		{"limit inf", reserve, "inf", "", badLimit, 0},
		{"limit -inf", reserve, "-inf", "", badLimit, 0},
		{"limit 1e400", reserve, "1e400", "3", badLimit, 0},
		{"limit abc", reserve, "abc", "", badLimit, 0},
		{"limit 2.5", reserve, "2.5", "", badLimit, 0},
		{"limit empty", reserve, "", "", "", 1}, // the plan's limit stays
		{"limit 2^53+2", reserve, "9007199254740994", "", badLimit, 0},
		{"limit nan, response amount", response, "nan", "", badLimit, 0},
		{"limit 1e3 is an integer", reserve, "1e3", "999", "", 1000},
		{"counter nan", reserve, "", "nan", badCounter, 0},
		{"counter 5.5", reserve, "", "5.5", badCounter, 0},
		{"counter inf", reserve, "", "inf", badCounter, 0},
		{"counter 1e400", reserve, "", "1e400", badCounter, 0},
		{"counter abc", reserve, "", "abc", badCounter, 0},
		{"counter nan, response amount", response, "", "nan", badCounter, 0},
		{"counter 5.5, response amount", response, "", "5.5", badCounter, 0},
		{"counter ' 5', response amount", response, "", " 5", "", 5},
		{"counter 0x3, response amount", response, "", "0x3", "", 3},
		{"counter ' 5', INCRBY refuses it", reserve, "", " 5", badCounter, 0},
		{"counter 9 of 10", reserve, "", "9", "", 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, nil)
			if tt.limit != "" {
				if err := rdb.HSet(ctx, entKey(id), "l:messages", tt.limit).Err(); err != nil {
					t.Fatal(err)
				}
			}
			key := counterKey(id, s.info(tc.messages), mustPeriodStart(s))
			if tt.counter != "" {
				if err := rdb.Set(ctx, key, tt.counter, time.Hour).Err(); err != nil {
					t.Fatal(err)
				}
			}
			c := tt.check
			c.TenantID = id
			var d Decision
			err := s.Reserve(ctx, &c, &d)
			if tt.err == "" {
				if err != nil || d.Outcome != Admitted || d.Current != tt.current {
					t.Errorf("Reserve: %v current %d, %v; want admitted at %d", d.Outcome, d.Current, err, tt.current)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) || d.Outcome != FailedOpen {
				t.Errorf("Reserve: %v %v, want failed open and an error containing %q", d.Outcome, err, tt.err)
			}
			if v, err := rdb.Get(ctx, key).Result(); v != tt.counter {
				t.Errorf("counter %q (%v), want %q unchanged", v, err, tt.counter)
			}
		})
	}
}
