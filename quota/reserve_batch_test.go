package quota

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/redistest"
)

// batchItem is one reserve call's keys (by name in a dataset) and ARGV.
type batchItem struct {
	tenant, counter string
	argv            []string
}

// batchDataset writes the same entitlements and counters under fresh
// tenant ids and names the keys of batchItems.
type batchDataset struct {
	ids map[string]string
}

func newBatchDataset(t *testing.T, rdb *redis.Client) *batchDataset {
	t.Helper()
	ctx := context.Background()
	ds := &batchDataset{ids: map[string]string{}}
	for _, name := range []string{"a", "b", "c", "d", "e", "f"} {
		ds.ids[name] = randomTenant(t)
		t.Cleanup(func() { cleanupTenant(t, rdb, ds.ids[name]) })
	}
	ents := map[string][]any{
		"a": {"plan", "pro", "anchor", "100", "plan_name", "Pro", "l:m", "10", "l:g", "3", "l:u", "-1", "l:nan", "nan", "f:x", "1", "f:y", "0"},
		"b": {"plan", "free", "anchor", "0", "plan_name", "Free", "l:m", "0"},
		// c has no entitlement at all: an unknown tenant.
		"d": {"anchor", "0", "l:m", "5"}, // no plan, still a known tenant
		"e": {"plan", "pro", "anchor", "x1", "l:m", "5"},
	}
	for name, fields := range ents {
		if err := rdb.HSet(ctx, entKey(ds.ids[name]), fields...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, kv := range [][2]string{{"a/m", "7"}, {"a/g", "2"}, {"a/bad", "zz"}} {
		if err := rdb.Set(ctx, ds.key(kv[0][:1], kv[0][2:]), kv[1], 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Keys of another type: a counter that is a list, an entitlement
	// that is a string.
	if err := rdb.RPush(ctx, ds.key("a", "list"), "7").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, ds.key("f", "ent"), "pro", 0).Err(); err != nil {
		t.Fatal(err)
	}
	return ds
}

// key is a tenant's entitlement ("ent") or one of its counters.
func (ds *batchDataset) key(tenant, counter string) string {
	if counter == "ent" {
		return entKey(ds.ids[tenant])
	}
	return "tg:{" + ds.ids[tenant] + "}:" + counter
}

func (ds *batchDataset) keys(it batchItem) []string {
	return []string{ds.key(it.tenant, "ent"), ds.key(it.tenant, it.counter)}
}

// batchTemplates cover every mode and reply code of reserve.lua.
var batchTemplates = []batchItem{
	{"a", "m", []string{"100", "1", "1", "5", "3600", "l:m"}},         // metered: 3 fit, then over limit
	{"a", "m", []string{"100", "2", "1.1", "5", "3600", "l:m"}},       // amount 2 with grace
	{"a", "m", []string{"100", "0", "1", "5", "3600", "l:m"}},         // amount 0
	{"a", "m", []string{"100", "0", "1", "6", "3600", "l:m"}},         // response amount
	{"a", "m", []string{"99", "1", "1", "5", "3600", "l:m"}},          // anchor mismatch
	{"a", "g", []string{"0", "1", "1", "1", "0", "l:g"}},              // gauge create
	{"a", "g", []string{"0", "0", "1", "4", "0", "l:g"}},              // gauge delete
	{"a", "u", []string{"100", "3", "1", "5", "3600", "l:u"}},         // unlimited
	{"a", "n", []string{"100", "1", "1", "5", "3600", "l:m"}},         // a counter the call creates (TTL)
	{"a", "ent", []string{"0", "0", "1", "3", "0", "", "f:x"}},        // flag on
	{"a", "ent", []string{"0", "0", "1", "3", "0", "", "f:x", "f:y"}}, // second flag off
	{"a", "bad", []string{"100", "1", "1", "5", "3600", "l:m"}},       // counter that is not a number
	{"b", "m", []string{"0", "1", "1", "5", "3600", "l:m"}},           // limit 0
	{"c", "m", []string{"0", "1", "1", "5", "3600", "l:m"}},           // unknown tenant
	{"d", "m", []string{"0", "1", "1", "5", "3600", "l:m"}},           // hash without a plan
	{"e", "m", []string{"5", "1", "1", "5", "3600", "l:m"}},           // malformed anchor
	{"a", "list", []string{"100", "1", "1", "5", "3600", "l:m"}},      // counter of another type
	{"a", "list", []string{"100", "0", "1", "6", "3600", "l:m"}},      // the same, response amount
	{"f", "m", []string{"0", "1", "1", "1", "0", "l:m"}},              // entitlement that is no hash
	{"a", "m", []string{"100", "1", "1", "5", "3600", "l:nan"}},       // limit that is no integer
}

// TestReserveBatchMatchesOne: a batch script run decides every request as
// the single-request script does when the same requests run one by one in
// the batch's order: same replies, same counters, same TTLs. Requests come
// in runs of identical ones, as the pipeline sends them.
func TestReserveBatchMatchesOne(t *testing.T) {
	rdb := testClient(t)
	ctx := context.Background()
	batchSrc := reserveCore + "\n" + reserveBatch
	rng := rand.New(rand.NewPCG(7, 11))

	for round := range 20 {
		var items []batchItem
		var runs []int
		for range 12 {
			runs = append(runs, 1+rng.IntN(5))
			tpl := batchTemplates[rng.IntN(len(batchTemplates))]
			for range runs[len(runs)-1] {
				items = append(items, tpl)
			}
		}
		one, batch := newBatchDataset(t, rdb), newBatchDataset(t, rdb)

		var want [][]int64
		for _, it := range items {
			res, err := rdb.Eval(ctx, reserveSrc, one.keys(it), toAny(it.argv)...).Int64Slice()
			if err != nil {
				t.Fatalf("round %d: single %v: %v", round, it, err)
			}
			want = append(want, res)
		}

		var keys []string
		var argv []any
		i := 0
		for _, n := range runs {
			it := items[i]
			keys = append(keys, batch.keys(it)...)
			argv = append(argv, 2, len(it.argv), n)
			argv = append(argv, toAny(it.argv)...)
			i += n
		}
		members, _ := runMembers(runs)
		raw, err := rdb.Eval(ctx, batchSrc, keys, argv...).Int64Slice()
		if err != nil {
			t.Fatalf("round %d: batch: %v", round, err)
		}
		got, err := splitBatchReply(raw, members, nil)
		if err != nil {
			t.Fatalf("round %d: split %v: %v", round, raw, err)
		}
		if len(got) != len(want) {
			t.Fatalf("round %d: %d replies, want %d", round, len(got), len(want))
		}
		for i := range want {
			if !slices.Equal(got[i], want[i]) {
				t.Errorf("round %d request %d %v: batch %v, one by one %v", round, i, items[i], got[i], want[i])
			}
		}
		for _, tpl := range batchTemplates {
			if tpl.counter == "ent" {
				continue
			}
			a, b := one.key(tpl.tenant, tpl.counter), batch.key(tpl.tenant, tpl.counter)
			if tpl.counter == "list" {
				continue
			}
			va, _ := rdb.Get(ctx, a).Result()
			vb, _ := rdb.Get(ctx, b).Result()
			ta, tb := rdb.TTL(ctx, a).Val() > 0, rdb.TTL(ctx, b).Val() > 0
			if va != vb || ta != tb {
				t.Errorf("round %d counter %s/%s: batch %q (TTL %v), one by one %q (TTL %v)",
					round, tpl.tenant, tpl.counter, vb, tb, va, ta)
			}
		}
	}
}

func toAny(s []string) []any {
	a := make([]any, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}

// TestPipelineBatchesConcurrentReserves: 300 concurrent reserves of one
// unit against a limit of 200 leave in fewer commands than calls, and
// every caller gets its own decision: exactly 200 admitted, with the
// current values 1..200 each once, 100 refused at 200, the counter at 200.
func TestPipelineBatchesConcurrentReserves(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	if s.pipe == nil {
		t.Fatal("no pipeline")
	}
	id := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, map[string]int64{"messages": 200})
	sent0 := s.PipelinedCommands()

	const n = 300
	var wg sync.WaitGroup
	decisions := make([]Decision, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := s.Reserve(context.Background(), &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}, &decisions[i]); err != nil {
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()

	var admitted []int64
	refused := 0
	for _, d := range decisions {
		switch d.Outcome {
		case Admitted:
			admitted = append(admitted, d.Current)
		case OverLimit:
			refused++
			if d.Current != 200 || d.PlanName != "Free" {
				t.Errorf("refused with current %d, plan %q; want 200, Free", d.Current, d.PlanName)
			}
		default:
			t.Errorf("outcome %v", d.Outcome)
		}
	}
	slices.Sort(admitted)
	for i, v := range admitted {
		if v != int64(i+1) {
			t.Fatalf("admitted current values %v, want 1..200 each once", admitted)
		}
	}
	if len(admitted) != 200 || refused != 100 {
		t.Errorf("%d admitted, %d refused; want 200 and 100", len(admitted), refused)
	}
	if u := usage(t, s, id, tc.messages); u != 200 {
		t.Errorf("usage %d, want 200", u)
	}
	sent := s.PipelinedCommands() - sent0
	t.Logf("%d reserves in %d commands", n, sent)
	if sent >= n {
		t.Errorf("%d commands for %d concurrent reserves: nothing was batched", sent, n)
	}
}

// TestPipelineBatchLoadsScript: after SCRIPT FLUSH (or a restart) a batch
// answered NOSCRIPT makes each of its requests retry alone with EVAL and
// the next batch go as EVAL; no request fails and the counts stay exact.
func TestPipelineBatchLoadsScript(t *testing.T) {
	addr := redistest.Private(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	id := newTenant(t, s, rdb, tc.PlanBySlug["pro"], 0, map[string]int64{"messages": 1_000_000})
	ctx := context.Background()

	total := 0
	for round := range 4 {
		if round%2 == 0 {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		for range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var d Decision
				if err := s.Reserve(ctx, &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}, &d); err != nil || d.Outcome != Admitted {
					t.Errorf("round %d: %v %v", round, d.Outcome, err)
				}
			}()
		}
		wg.Wait()
		total += 100
		if u := usage(t, s, id, tc.messages); u != int64(total) {
			t.Fatalf("round %d: usage %d, want %d", round, u, total)
		}
	}
	batch := redis.NewScript(reserveCore + "\n" + reserveBatch)
	if ok, err := rdb.ScriptExists(ctx, batch.Hash()).Result(); err != nil || !ok[0] {
		t.Errorf("batch script loaded after the flushes: %v %v", ok, err)
	}
}

// TestPipelineBatchConnectionKilled: batched reserves while Redis drops the
// pipeline's connection every few milliseconds. Every call ends; no
// admitted request goes uncounted, and nothing is counted beyond the calls
// made (a call whose reply was lost may or may not have counted).
func TestPipelineBatchConnectionKilled(t *testing.T) {
	rdb, stopKilling := killedClient(t)
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	id := newTenant(t, s, rdb, tc.PlanBySlug["pro"], 0, map[string]int64{"messages": 1_000_000})
	ctx := context.Background()

	const callers, calls = 64, 60
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted, failed := 0, 0
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls {
				var d Decision
				err := s.Reserve(ctx, &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}, &d)
				mu.Lock()
				switch {
				case err == nil && d.Outcome == Admitted:
					admitted++
				case err != nil:
					failed++
				default:
					t.Errorf("outcome %v without an error", d.Outcome)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	stopKilling()
	// Counts kept locally for failed calls (fail open) are not in Redis
	// yet; only what Redis itself counted is compared.
	v, err := rdb.Get(ctx, counterKey(id, s.info(tc.messages), periodStartOf(s, id))).Int64()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d admitted, %d failed, %d counted", admitted, failed, v)
	if v < int64(admitted) || v > int64(admitted+failed) {
		t.Errorf("counted %d for %d admitted and %d failed calls", v, admitted, failed)
	}
	if admitted == 0 {
		t.Error("no call succeeded between the kills")
	}
}

// runMembers links calls as a batch of runs of the given lengths, as
// pipeLink.runsOf leaves them, and counts them.
func runMembers(runs []int) (members *pipeCall, calls int) {
	var tail *pipeCall
	for _, n := range runs {
		for j := range n {
			c := &pipeCall{}
			if j == 0 {
				c.runLen = n
			}
			if members == nil {
				members = c
			} else {
				tail.next = c
			}
			tail = c
			calls++
		}
	}
	return members, calls
}

// FuzzSplitBatchReply: any reply against any runs splits without a panic;
// a split that succeeds gives every call a reply.
func FuzzSplitBatchReply(f *testing.F) {
	f.Add([]byte{1, 3, 2}, []byte{4, 1, 5, 10, 10, 2, 1, 4, 2, 10, 10, 10})
	f.Add([]byte{2}, []byte{4, 1, 1, 1, 1, 1, 0})
	f.Fuzz(func(t *testing.T, runs []byte, raw []byte) {
		lens := make([]int, len(runs))
		for i, r := range runs {
			lens[i] = int(r%6) + 1
		}
		members, calls := runMembers(lens)
		ints := make([]int64, len(raw))
		for i, b := range raw {
			ints[i] = int64(int8(b))
		}
		got, err := splitBatchReply(ints, members, nil)
		if err == nil && len(got) != calls {
			t.Fatalf("%d replies for %d calls", len(got), calls)
		}
	})
}

// periodStartOf is the Unix start of the tenant's current period, as
// Reserve computes it.
func periodStartOf(s *Store, id string) int64 {
	_, anchor := s.anchorOf(id)
	start, _ := Period(anchor, s.now())
	return start.Unix()
}

// TestReserveBatchBadKeyFailsOnlyItsRun: a run that meets a key Tollgate
// does not write (a counter or entitlement of another type) gets the
// malformed decision, and the batch's other runs, before and after it,
// are decided and counted as usual. So is a run whose decision raises an
// error the script does not expect (here: a mode that is no number).
func TestReserveBatchBadKeyFailsOnlyItsRun(t *testing.T) {
	rdb := testClient(t)
	ctx := context.Background()
	batchSrc := reserveCore + "\n" + reserveBatch
	metered := []string{"100", "1", "1", "5", "3600", "l:m"}
	tests := []struct {
		name  string
		spoil func(ent, counter string) error
		limit string   // the bad tenant's l:m
		argv  []string // the bad run's arguments, metered when nil
		want  []int64  // the bad run's decision (a prefix when text follows)
		text  bool     // the decision ends with an error's text
	}{
		{name: "counter is a list", limit: "10", want: []int64{8, 0, 0, 0, 2},
			spoil: func(_, c string) error { return rdb.RPush(ctx, c, "7").Err() }},
		{name: "counter is a hash", limit: "10", want: []int64{8, 0, 0, 0, 2},
			spoil: func(_, c string) error { return rdb.HSet(ctx, c, "n", "7").Err() }},
		{name: "counter is a list, unlimited", limit: "-1", want: []int64{8, 0, 0, 0, 2},
			spoil: func(_, c string) error { return rdb.RPush(ctx, c, "7").Err() }},
		{name: "entitlement is a string", limit: "10", want: []int64{8, 0, 0, 0, 4},
			spoil: func(e, _ string) error { return rdb.Set(ctx, e, "pro", 0).Err() }},
		{name: "entitlement is a list", limit: "10", want: []int64{8, 0, 0, 0, 4},
			spoil: func(e, _ string) error {
				if err := rdb.Del(ctx, e).Err(); err != nil {
					return err
				}
				return rdb.RPush(ctx, e, "pro").Err()
			}},
		{name: "decision raises", limit: "10", argv: []string{"100", "1", "1", "x", "3600", "l:m"},
			want: []int64{8, 0, 0, 0, 0}, text: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good, bad := randomTenant(t), randomTenant(t)
			cleanupTenant(t, rdb, good)
			cleanupTenant(t, rdb, bad)
			for _, id := range []string{good, bad} {
				limit := "10"
				if id == bad {
					limit = tt.limit
				}
				if err := rdb.HSet(ctx, entKey(id), "plan", "pro", "anchor", "100", "plan_name", "Pro", "l:m", limit).Err(); err != nil {
					t.Fatal(err)
				}
			}
			gkey, bkey := "tg:{"+good+"}:m", "tg:{"+bad+"}:m"
			if tt.spoil != nil {
				if err := tt.spoil(entKey(bad), bkey); err != nil {
					t.Fatal(err)
				}
			}
			argv := tt.argv
			if argv == nil {
				argv = metered
			}
			// good x3, bad x2, good x1: runs before and after the bad one.
			keys := []string{entKey(good), gkey, entKey(bad), bkey, entKey(good), gkey}
			var args []any
			for _, r := range []struct {
				n    int
				argv []string
			}{{3, metered}, {2, argv}, {1, metered}} {
				args = append(append(args, 2, len(r.argv), r.n), toAny(r.argv)...)
			}
			raw, err := rdb.Eval(ctx, batchSrc, keys, args...).Int64Slice()
			if err != nil {
				t.Fatalf("batch: %v", err)
			}
			members, _ := runMembers([]int{3, 2, 1})
			got, err := splitBatchReply(raw, members, nil)
			if err != nil {
				t.Fatalf("split %v: %v", raw, err)
			}
			for i, cur := range map[int]int64{0: 1, 1: 2, 2: 3, 5: 4} {
				if want := []int64{1, cur, 10, 10}; !slices.Equal(got[i], want) {
					t.Errorf("good request %d: %v, want %v", i, got[i], want)
				}
			}
			for _, i := range []int{3, 4} {
				r := got[i]
				if tt.text && len(r) > len(tt.want) {
					t.Logf("bad request %d: %q", i, string(int64Bytes(r[len(tt.want):])))
					r = r[:len(tt.want)]
				}
				if !slices.Equal(r, tt.want) || (tt.text && len(got[i]) == len(tt.want)) {
					t.Errorf("bad request %d: %v, want %v (text %v)", i, got[i], tt.want, tt.text)
				}
			}
			if v, err := rdb.Get(ctx, gkey).Result(); err != nil || v != "4" {
				t.Errorf("good counter %q, %v; want 4", v, err)
			}
			if tt.spoil == nil {
				if n, err := rdb.Exists(ctx, bkey).Result(); err != nil || n != 0 {
					t.Errorf("bad counter exists (%d, %v): the failed run counted", n, err)
				}
			}
		})
	}
}

func int64Bytes(r []int64) []byte {
	b := make([]byte, len(r))
	for i, v := range r {
		b[i] = byte(v)
	}
	return b
}

// TestPipelineBatchBadKeyFailsOnlyItsRequests: 400 concurrent reserves of
// two tenants, one of whose counter is a list, leave in batches; every
// request of the good tenant is admitted and counted once, every request
// of the bad one fails with the feature's fail mode and an error naming
// the counter.
func TestPipelineBatchBadKeyFailsOnlyItsRequests(t *testing.T) {
	rdb := testClient(t)
	tc := newTestConfig()
	s := newStore(t, rdb, tc.Config)
	ctx := context.Background()
	limits := map[string]int64{"messages": 1_000_000}
	good := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, limits)
	bad := newTenant(t, s, rdb, tc.PlanBySlug["free"], 0, limits)
	bkey := counterKey(bad, s.info(tc.messages), periodStartOf(s, bad))
	if err := rdb.RPush(ctx, bkey, "1").Err(); err != nil {
		t.Fatal(err)
	}
	sent0 := s.PipelinedCommands()

	const n = 400
	decisions := make([]Decision, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		id := good
		if i%2 == 1 {
			id = bad
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c := &Check{TenantID: id, Meter: fixed(tc.messages, 1), Amount: 1}
			errs[i] = s.Reserve(ctx, c, &decisions[i])
		}()
	}
	close(start)
	wg.Wait()

	var admitted int64
	for i, d := range decisions {
		if i%2 == 0 {
			if errs[i] != nil || d.Outcome != Admitted {
				t.Errorf("good request %d: %v %v, want admitted", i, d.Outcome, errs[i])
				continue
			}
			admitted++
			continue
		}
		if errs[i] == nil || !strings.Contains(errs[i].Error(), "malformed counter "+bkey) || d.Outcome != FailedOpen {
			t.Errorf("bad request %d: %v %v, want failed open naming the counter", i, d.Outcome, errs[i])
		}
	}
	if u := usage(t, s, good, tc.messages); u != admitted || admitted != n/2 {
		t.Errorf("good tenant: usage %d, %d admitted; want %d each", u, admitted, n/2)
	}
	sent := s.PipelinedCommands() - sent0
	t.Logf("%d reserves in %d commands", n, sent)
	if sent >= n {
		t.Errorf("%d commands for %d concurrent reserves: nothing was batched", sent, n)
	}
}
