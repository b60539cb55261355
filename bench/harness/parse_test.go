package harness

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/bench/loadgen"
)

func TestParseCommandStatsAndDelta(t *testing.T) {
	b, err := os.ReadFile("testdata/commandstats.txt")
	if err != nil {
		t.Fatal(err)
	}
	after := parseCommandStats(string(b))
	if after["evalsha"] != 46006 || after["hget"] != 92012 || after["config|resetstat"] != 1 {
		t.Fatalf("parsed %v", after)
	}
	before := map[string]int64{"evalsha": 6, "hget": 12, "info": 2}
	d, total := statsDelta(before, after)
	if d["evalsha"] != 46000 || d["hget"] != 92000 || d["info"] != 0 || total != 46000+92000+1 {
		t.Fatalf("delta %v total %d", d, total)
	}
}

func TestParseGoBench(t *testing.T) {
	b, err := os.ReadFile("testdata/gobench.txt")
	if err != nil {
		t.Fatal(err)
	}
	got := parseGoBench(string(b))
	if len(got) != 3 {
		t.Fatalf("got %+v", got)
	}
	if g := got[1]; g.Package != "github.com/tollgate/tollgate/proxy" || g.Name != "BenchmarkHandler/metered-exact-2" ||
		g.N != 20000 || g.NsPerOp != 101917 || g.BytesPerOp != 544 || g.AllocsPerOp != 12 || g.Metrics != nil {
		t.Fatalf("metered line %+v", g)
	}
	if g := got[2]; g.AllocsPerOp != 1 || g.BytesPerOp != 29 || g.Metrics["redis-calls/op"] != 0.00015 || g.Metrics["cpu-us/op"] != 26.41 || len(g.Metrics) != 3 {
		t.Fatalf("custom metrics line %+v", g)
	}
}

func TestMonitorRecordSeparatesScriptCommands(t *testing.T) {
	m := newMonitor()
	m.startPass()
	for _, line := range []string{
		`+1700000000.100000 [0 127.0.0.1:5555] "evalsha" "abc" "2" "tg:{t}:ent"` + "\r\n",
		`+1700000000.100001 [0 lua] "EXISTS" "tg:{t}:ent"` + "\r\n",
		// Another client's transaction, interleaved with the request path.
		`+1700000000.100002 [0 127.0.0.1:6000] "MULTI"` + "\r\n",
		`+1700000000.100003 [0 lua] "incrby" "k" "1"` + "\r\n",
		`+1700000000.100004 [0 127.0.0.1:6000] "TIME"` + "\r\n",
		`+1700000000.100005 [0 127.0.0.1:5555] "evalsha" "abc" "2" "tg:{t}:ent"` + "\r\n",
		`+1700000000.100006 [0 127.0.0.1:6000] "GET" "tg:{t}:c"` + "\r\n",
		`+1700000000.100007 [0 127.0.0.1:6000] "EXEC"` + "\r\n",
		`+1700000000.100008 [0 127.0.0.1:6000] "get" "tg:apikey:y"` + "\r\n",
		`+1700000000.100009 [0 unix:/tmp/r.sock] "get" "tg:apikey:x"` + "\r\n",
		"garbage\r\n",
	} {
		m.record(line)
	}
	if m.top["evalsha"] != 2 || m.top["get"] != 2 || m.lua["exists"] != 1 || m.lua["incrby"] != 1 || len(m.top) != 2 {
		t.Fatalf("top %v lua %v", m.top, m.lua)
	}
	if m.tx["multi"] != 1 || m.tx["time"] != 1 || m.tx["get"] != 1 || m.tx["exec"] != 1 || len(m.tx) != 4 {
		t.Fatalf("transactions %v", m.tx)
	}
}

// What clients send in the idle window is learnt, not counted; in the pass,
// as much of it as its idle rate explains is background and the rest, like
// every other command, the requests'.
func TestMonitorLeavesOutBackground(t *testing.T) {
	m := newMonitor()
	for range 4 { // idle: the epoch check four times, one ping
		m.record(`+1700000000.1 [0 127.0.0.1:6001] "get" "tg:epoch"` + "\r\n")
	}
	m.record(`+1700000000.2 [0 127.0.0.1:6001] "ping"` + "\r\n")
	m.record(`+1700000000.3 [0 lua] "incrby" "k" "1"` + "\r\n")
	if len(m.top) != 0 || len(m.lua) != 0 || m.idle[cmdKey{"get", "tg:epoch"}] != 4 || m.idle[cmdKey{"ping", ""}] != 1 {
		t.Fatalf("idle window: top %v lua %v idle %v", m.top, m.lua, m.idle)
	}
	m.startPass()
	for range 3 {
		m.record(`+1700000000.4 [0 127.0.0.1:6001] "get" "tg:epoch"` + "\r\n")
	}
	m.record(`+1700000000.5 [0 127.0.0.1:6002] "get" "tg:apikey:x"` + "\r\n")
	for range 5 {
		m.record(`+1700000000.6 [0 127.0.0.1:5555] "evalsha" "abc" "2" "tg:{t}:ent"` + "\r\n")
	}
	if m.top["get"] != 4 || m.top["evalsha"] != 5 {
		t.Fatalf("pass: top %v", m.top)
	}

	for _, tc := range []struct {
		name             string
		pass             map[cmdKey]int64
		idleFor, passFor time.Duration
		want             map[string]int64
	}{
		// 4 a second idle: 4 expected in 1 s, up to 9 left out.
		{"within the idle rate", map[cmdKey]int64{{"get", "tg:epoch"}: 6, {"get", "tg:apikey:x"}: 1}, time.Second, time.Second, map[string]int64{"get": 6}},
		// A request that also sent it: 200 where 9 are explained.
		{"above it", map[cmdKey]int64{{"get", "tg:epoch"}: 200}, time.Second, time.Second, map[string]int64{"get": 9}},
		{"a longer pass explains more", map[cmdKey]int64{{"get", "tg:epoch"}: 30}, time.Second, 3 * time.Second, map[string]int64{"get": 25}},
		{"a key not seen idle", map[cmdKey]int64{{"get", "tg:other"}: 3, {"ping", ""}: 1}, time.Second, time.Second, map[string]int64{"ping": 1}},
		{"no idle window", map[cmdKey]int64{{"get", "tg:epoch"}: 3}, 0, time.Second, map[string]int64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := backgroundShare(m.idle, tc.pass, tc.idleFor, tc.passFor)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}

	c := m.stop()
	if c.Top["evalsha"] != 5 || c.Background["get"] == 0 || c.Top["get"]+c.Background["get"] != 4 {
		t.Fatalf("stop: top %v background %v", c.Top, c.Background)
	}
}

func FuzzMonitorRecord(f *testing.F) {
	for _, s := range []string{
		`+1700000000.1 [0 127.0.0.1:6001] "get" "tg:epoch"`,
		`+1700000000.1 [0 lua] "INCRBY" "k" "1"`,
		`+1700000000.1 [0 127.0.0.1:6000] "MULTI"`,
		`+1 [0 unix:/tmp/r.sock] "set" "a\"b" "c"`,
		`[`, `]`, `"`, `+1 [x] "`, "",
	} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, line string, passing bool) {
		m := newMonitor()
		if passing {
			m.startPass()
		}
		m.record(line)
		n := sumCounts(m.top) + sumCounts(m.lua) + sumCounts(m.tx)
		var idle int64
		for _, v := range m.idle {
			idle += v
		}
		if n+idle > 1 || (!passing && n != 0) || (passing && idle != 0) {
			t.Fatalf("%q counted %d in the pass and %d idle", line, n, idle)
		}
	})
}

func TestParseWrk(t *testing.T) {
	out := "Running 1s test\nWRKJSON {\"requests\":1000,\"duration_us\":2000000,\"connect\":0,\"read\":1,\"write\":0,\"status\":10,\"timeout\":2," +
		"\"p50\":100.0,\"p90\":150.0,\"p99\":400.0,\"p999\":900.0,\"max\":1200.0,\"mean\":110.5}\n"
	res, err := parseWrk(out, loadgen.Config{Targets: []string{"127.0.0.1:1"}}, 8)
	if err != nil {
		t.Fatal(err)
	}
	if res.RPS != 500 || res.Errors != 3 || res.Non2xx != 10 || res.LatencyUS.P999 != 900 || res.Connections != 8 {
		t.Fatalf("%+v", res)
	}
	if _, err := parseWrk("no result here", loadgen.Config{}, 1); err == nil {
		t.Fatal("missing WRKJSON line accepted")
	}
}

func TestExpectedShare(t *testing.T) {
	at := &Scenario{Status: 429}
	any2xx := &Scenario{}
	for _, tc := range []struct {
		name string
		sc   *Scenario
		r    loadgen.Result
		want float64
	}{
		{"go, 429s", at, loadgen.Result{Requests: 4, Status: map[string]int{"429": 3, "200": 1}}, 0.75},
		{"go, any 2xx", any2xx, loadgen.Result{Requests: 4, Status: map[string]int{"201": 2, "204": 2}}, 1},
		{"wrk, rejections are its status errors", at, loadgen.Result{Requests: 10, Non2xx: 10}, 1},
		{"wrk, 2xx", any2xx, loadgen.Result{Requests: 10, Non2xx: 1}, 0.9},
		{"nothing", at, loadgen.Result{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := expectedShare(tc.sc, tc.r); got != tc.want {
				t.Fatalf("got %v want %v", got, tc.want)
			}
		})
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"unknown scenario", Options{Scenarios: []string{"nope"}, Generator: "go"}},
		{"unbounded duration", Options{Duration: -1, Generator: "go"}},
		{"bad generator", Options{Generator: "ab"}},
		{"too many instances", Options{Instances: 99, Generator: "go"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.o.fill(); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	o := Options{Generator: "go"}
	if err := o.fill(); err != nil || len(o.Scenarios) != len(AllScenarios) || o.Duration <= 0 {
		t.Fatalf("defaults: %v %+v", err, o)
	}
}

func TestBenchBase(t *testing.T) {
	for in, want := range map[string]string{
		"BenchmarkHandler/unmetered-2":      "BenchmarkHandler/unmetered",
		"BenchmarkHandler/metered-exact-16": "BenchmarkHandler/metered-exact",
		"BenchmarkRouterMatch":              "BenchmarkRouterMatch",
		"BenchmarkHandler/metered-exact":    "BenchmarkHandler/metered-exact",
		"BenchmarkReserveLeaseParallel-2":   "BenchmarkReserveLeaseParallel",
	} {
		if got := benchBase(in); got != want {
			t.Errorf("benchBase(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckTargets(t *testing.T) {
	run := func(target string, rps float64) TargetRun {
		return TargetRun{Target: target, Load: loadgen.Result{RPS: rps}}
	}
	full := func() *Report {
		pass := ScenarioResult{Name: "passthrough", Runs: []TargetRun{run("direct", 100), run("nginx", 50), run("tollgate", 60)}}
		pass.Runs[0].Paced = &loadgen.Result{LatencyUS: loadgen.Latency{P99: 1000}}
		pass.Runs[2].Paced = &loadgen.Result{LatencyUS: loadgen.Latency{P99: 1500}}
		met := ScenarioResult{Name: "metered", Runs: []TargetRun{run("tollgate", 30)}}
		met.Runs[0].RoundTripsPerReq, met.Runs[0].MonitorRequests = 1, 200
		lease := ScenarioResult{Name: "lease", Runs: []TargetRun{run("tollgate", 58)}}
		lease.Runs[0].RedisCommandsPerReq = 0.001
		multi := ScenarioResult{Name: "lease-multi", Runs: []TargetRun{run("tollgate x4", 29)}}
		return &Report{Scenarios: []ScenarioResult{pass, met, lease, multi}, GoBench: []GoBench{
			{Name: "BenchmarkRouterMatch-2"}, {Name: "BenchmarkResolveAPIKey-2"}, {Name: "BenchmarkResolveHeader-2", AllocsPerOp: 1},
			{Name: "BenchmarkWriteHeaders-2"},
		}}
	}
	for _, tc := range []struct {
		name   string
		rep    *Report
		goRan  bool
		wantOK string // Met of the nine targets, in order
	}{
		{"nothing measured", &Report{}, false, "n/a n/a n/a n/a n/a n/a n/a n/a n/a"},
		{"full run", full(), true, "yes yes no yes yes yes yes no yes"},
		{"go benchmarks skipped", full(), false, "yes yes no yes yes yes n/a n/a n/a"},
		// The rounds' medians overrule the single runs: passthrough drops
		// below nginx, metered rises above 0.8x.
		// The p99 added rises from the scenario's +0.5 ms to a median of +2.
		{"alternating rounds", withRounds(full(), []Round{
			{RPS: map[string]float64{legNginx: 100, legPassthrough: 90, legMetered: 81, legLease: 95},
				PacedP99: map[string]float64{legDirect: 1, legPassthrough: 3}},
			{RPS: map[string]float64{legNginx: 100, legPassthrough: 80, legMetered: 70, legLease: 80},
				PacedP99: map[string]float64{legDirect: 1, legPassthrough: 1.5}},
			{RPS: map[string]float64{legNginx: 100, legPassthrough: 120, legMetered: 60, legLease: 130},
				PacedP99: map[string]float64{legDirect: 2, legPassthrough: 4}},
		}), true, "no no yes yes yes yes yes no yes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.rep.computeRatios()
			tc.rep.checkTargets(tc.goRan)
			var got []string
			for _, c := range tc.rep.Targets {
				got = append(got, c.Met)
			}
			if g := strings.Join(got, " "); g != tc.wantOK {
				t.Fatalf("met %q, want %q\n%+v", g, tc.wantOK, tc.rep.Targets)
			}
		})
	}
	rep := full()
	rep.computeRatios()
	if v := rep.scenario("lease-multi").Ratios["over_single_instance_rps"]; v != 0.5 {
		t.Fatalf("lease-multi over lease: %v", v)
	}
}

func withRounds(r *Report, rounds []Round) *Report {
	r.Rounds = &RoundSummary{Rounds: rounds, Ratios: roundSpreads(rounds)}
	return r
}

func TestRoundSpreads(t *testing.T) {
	rounds := []Round{
		{RPS: map[string]float64{legNginx: 100, legPassthrough: 50, legMetered: 40}},
		{RPS: map[string]float64{legNginx: 100, legPassthrough: 90, legMetered: 45}},
		{RPS: map[string]float64{legNginx: 100, legPassthrough: 70}},
		{RPS: map[string]float64{legNginx: 100, legPassthrough: 80}},
	}
	got := roundSpreads(rounds)
	if sp := got["tollgate_over_nginx_rps"]; sp != (Spread{Median: 0.75, Min: 0.5, Max: 0.9, N: 4}) {
		t.Errorf("passthrough over nginx: %+v", sp)
	}
	// Only the rounds that ran both legs count.
	if sp := got["metered_over_passthrough_rps"]; sp != (Spread{Median: 0.65, Min: 0.5, Max: 0.8, N: 2}) {
		t.Errorf("metered over passthrough: %+v", sp)
	}
	if _, ok := got[pacedAddedKey]; ok {
		t.Errorf("p99 added without paced runs: %+v", got)
	}
	if _, ok := got["lease_over_passthrough_rps"]; ok {
		t.Errorf("lease ratio without lease legs: %+v", got)
	}

	// nginx's fixed-rate p99 is summarised beside Tollgate's, from the
	// rounds that ran it.
	paced := []Round{
		{PacedP99: map[string]float64{legDirect: 1, legNginx: 2, legPassthrough: 3}},
		{PacedP99: map[string]float64{legDirect: 1, legNginx: 1.5, legPassthrough: 1.25}},
		{PacedP99: map[string]float64{legDirect: 2, legPassthrough: 4}},
	}
	got = roundSpreads(paced)
	if sp := got[pacedAddedKey]; sp != (Spread{Median: 2, Min: 0.25, Max: 2, N: 3}) {
		t.Errorf("tollgate p99 added: %+v", sp)
	}
	if sp := got[pacedNginxAddedKey]; sp != (Spread{Median: 0.75, Min: 0.5, Max: 1, N: 2}) {
		t.Errorf("nginx p99 added: %+v", sp)
	}
	if s := formatPacedP99(paced[0]); s != "direct 1.00 ms, nginx 2.00 ms, tollgate 3.00 ms" {
		t.Errorf("formatPacedP99 = %q", s)
	}
	if s := formatPacedP99(paced[2]); s != "direct 2.00 ms, tollgate 4.00 ms" {
		t.Errorf("formatPacedP99 without nginx = %q", s)
	}
	rep := withRounds(&Report{}, paced)
	rep.checkTargets(false)
	if v := rep.Targets[1].Value; !strings.Contains(v, "+2.000 ms (median of 3 alternating rounds") || !strings.Contains(v, "nginx in the same rounds +0.750 ms") {
		t.Errorf("p99 target shows %q", v)
	}
}

func TestParseProcs(t *testing.T) {
	cases := []struct {
		name, log      string
		procs, workers int
	}{
		{"start-up line before workers", `{"level":"info","msg":"redis restored"}
{"level":"info","ts":"x","msg":"tollgate listening","api":"127.0.0.1:1","procs":1,"procs_setting":"auto","proxy":"127.0.0.1:2"}
`, 1, 1},
		{"one process", `{"level":"info","ts":"x","msg":"tollgate listening","api":"127.0.0.1:1","procs":2,"procs_setting":"all","workers":1,"proxy":"127.0.0.1:2"}`, 2, 1},
		{"workers", `{"level":"info","msg":"tollgate workers started","workers":2,"procs_each":1}
{"level":"info","ts":"x","msg":"tollgate listening","api":"127.0.0.1:1","procs":1,"procs_setting":"1","worker":1,"workers":2,"proxy":"127.0.0.1:2"}
`, 1, 2},
		{"not started yet", `{"level":"info","msg":"redis restored"}` + "\n", 0, 0},
		{"torn line", `{"msg":"tollgate listening","procs":`, 0, 0},
		{"empty", "", 0, 0},
	}
	for _, tc := range cases {
		if procs, workers := parseProcs([]byte(tc.log)); procs != tc.procs || workers != tc.workers {
			t.Errorf("%s: parseProcs = %d, %d; want %d, %d", tc.name, procs, workers, tc.procs, tc.workers)
		}
	}
}
