package harness

import (
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseSwitches(t *testing.T) {
	real, err := os.ReadFile("testdata/status.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		status string
		v, n   int64
		ok     bool
	}{
		{name: "a thread's status file", status: string(real), v: 81234, n: 977, ok: true},
		{name: "spaces instead of a tab", status: "voluntary_ctxt_switches:  5\nnonvoluntary_ctxt_switches: 0\n", v: 5, n: 0, ok: true},
		{name: "no final newline", status: "nonvoluntary_ctxt_switches:\t7\nvoluntary_ctxt_switches:\t9", v: 9, n: 7, ok: true},
		{name: "involuntary missing", status: "voluntary_ctxt_switches:\t5\n"},
		{name: "voluntary missing", status: "nonvoluntary_ctxt_switches:\t5\n"},
		{name: "empty", status: ""},
		{name: "not a number", status: "voluntary_ctxt_switches:\tmany\nnonvoluntary_ctxt_switches:\t1\n"},
		{name: "negative", status: "voluntary_ctxt_switches:\t-3\nnonvoluntary_ctxt_switches:\t1\n"},
		{name: "twice", status: "voluntary_ctxt_switches:\t1\nvoluntary_ctxt_switches:\t2\nnonvoluntary_ctxt_switches:\t1\n"},
		{name: "a prefix is not the field", status: "voluntary_ctxt_switches_x:\t1\nnonvoluntary_ctxt_switches:\t1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, n, ok := parseSwitches([]byte(tc.status))
			if ok != tc.ok || v != tc.v || n != tc.n {
				t.Fatalf("parseSwitches = %d, %d, %v; want %d, %d, %v", v, n, ok, tc.v, tc.n, tc.ok)
			}
		})
	}
}

func FuzzParseSwitches(f *testing.F) {
	real, err := os.ReadFile("testdata/status.txt")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(real)
	f.Add([]byte("voluntary_ctxt_switches:\t1\nnonvoluntary_ctxt_switches:\t2"))
	f.Add([]byte("voluntary_ctxt_switches:\t99999999999999999999\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, n, ok := parseSwitches(b)
		if !ok {
			if v != 0 || n != 0 {
				t.Fatalf("failed parse returned %d, %d", v, n)
			}
			return
		}
		if v < 0 || n < 0 {
			t.Fatalf("negative counts %d, %d from %q", v, n, b)
		}
		if !strings.Contains(string(b), "voluntary_ctxt_switches:") {
			t.Fatalf("parsed %q without the field", b)
		}
	})
}

// TestContextSwitchesCountEveryThread: the count must include threads
// other than the main one, where a Go server's work runs. A goroutine
// locked to a thread other than the main one makes that thread sleep on
// every time.Sleep.
func TestContextSwitchesCountEveryThread(t *testing.T) {
	const sleeps = 50
	before := contextSwitches(os.Getpid())
	if before.voluntary < 0 {
		t.Fatalf("could not read this process's threads")
	}
	done := make(chan struct{})
	var sleeper func()
	sleeper = func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if syscall.Gettid() == os.Getpid() {
			// The main thread: its own status file would do. Hold it
			// so the next goroutine gets another thread.
			go sleeper()
			<-done
			return
		}
		defer close(done)
		for range sleeps {
			time.Sleep(200 * time.Microsecond)
		}
	}
	go sleeper()
	<-done
	after := contextSwitches(os.Getpid())
	if got := after.voluntary - before.voluntary; got < sleeps {
		t.Fatalf("%d voluntary switches counted for %d sleeps of a thread", got, sleeps)
	}
	per := before.perReq(after, sleeps)
	if per == nil || per.Sleeps < 1 {
		t.Fatalf("per request %+v, want at least one sleep each", per)
	}
}

func TestContextSwitchesOfAGoneProcess(t *testing.T) {
	// Pids are below 2^22 on Linux; this one is above.
	c := contextSwitches(os.Getpid(), 1<<30)
	if c.voluntary != -1 || c.involuntary != -1 {
		t.Fatalf("count %+v for a process that does not exist, want -1, -1", c)
	}
	if p := c.perReq(contextSwitches(os.Getpid()), 10); p != nil {
		t.Fatalf("per request %+v from a missing count, want nil", p)
	}
	if p := (switchCount{}).perReq(switchCount{4, 2}, 0); p != nil {
		t.Fatalf("per request %+v for no requests, want nil", p)
	}
}

func TestProcessTable(t *testing.T) {
	r := &Report{Scenarios: []ScenarioResult{
		{Name: "passthrough", Runs: []TargetRun{
			{Target: "direct", Costs: Costs{CPUUSPerReq: 20, UpstreamCPUUSPerReq: 20,
				Switches: &Switches{0.5, 0.1}, UpstreamSwitches: &Switches{0.5, 0.1}}},
			{Target: "tollgate", Costs: Costs{CPUUSPerReq: 31.25, UpstreamCPUUSPerReq: 27,
				Switches: &Switches{0.04, 0.7}, UpstreamSwitches: &Switches{0.8, 0.2}}},
		}},
		{Name: "metered", Runs: []TargetRun{
			{Target: "tollgate", Costs: Costs{CPUUSPerReq: 45, UpstreamCPUUSPerReq: 30, RedisCPUUSPerReq: 9.5,
				Switches: &Switches{0.09, 0.88}, UpstreamSwitches: &Switches{0.84, 0.18}, RedisSwitches: &Switches{0.2, 0.01}}},
		}},
	}}
	want := "| scenario | target | target CPU µs/req | upstream CPU µs/req | Redis CPU µs/req | target sleeps / preempted per req | upstream sleeps / preempted per req | Redis sleeps / preempted per req |\n" +
		"| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n" +
		"| passthrough | direct | 20.0 | 20.0 | – | 0.50 / 0.10 | 0.50 / 0.10 | – |\n" +
		"| passthrough | tollgate | 31.2 | 27.0 | – | 0.04 / 0.70 | 0.80 / 0.20 | – |\n" +
		"| metered | tollgate | 45.0 | 30.0 | 9.5 | 0.09 / 0.88 | 0.84 / 0.18 | 0.20 / 0.01 |\n"
	if got := processTable(r); got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
	if got := processTable(&Report{Scenarios: []ScenarioResult{{Name: "x", Runs: []TargetRun{{Target: "t"}}}}}); got != "" {
		t.Fatalf("table without counts: %q", got)
	}
}

func TestMedianCost(t *testing.T) {
	rounds := []Round{
		{Costs: map[string]Costs{"a": {CPUUSPerReq: 30, UpstreamCPUUSPerReq: 20, Switches: &Switches{0.1, 0.3}, UpstreamSwitches: &Switches{0.5, 0.1}}}},
		{Costs: map[string]Costs{"a": {CPUUSPerReq: 10, UpstreamCPUUSPerReq: 25, Switches: &Switches{0.3, 0.1}}}},
		{Costs: map[string]Costs{"a": {CPUUSPerReq: 20, UpstreamCPUUSPerReq: 22, Switches: &Switches{0.2, 0.2}, UpstreamSwitches: &Switches{0.7, 0.3}}}},
		// A round without the leg (say, it failed to start) is left out.
		{Costs: map[string]Costs{"b": {CPUUSPerReq: 99}}},
	}
	got, n := medianCost(rounds, "a")
	want := Costs{CPUUSPerReq: 20, UpstreamCPUUSPerReq: 22, Switches: &Switches{0.2, 0.2}, UpstreamSwitches: &Switches{0.6, 0.2}}
	if n != 3 || got.CPUUSPerReq != want.CPUUSPerReq || got.UpstreamCPUUSPerReq != want.UpstreamCPUUSPerReq || got.RedisCPUUSPerReq != 0 ||
		*got.Switches != *want.Switches || *got.UpstreamSwitches != *want.UpstreamSwitches || got.RedisSwitches != nil {
		t.Fatalf("medianCost = %+v (switches %+v, upstream %+v, Redis %+v) over %d rounds; want %+v over 3",
			got, got.Switches, got.UpstreamSwitches, got.RedisSwitches, n, want)
	}
	if _, n := medianCost(rounds, "missing"); n != 0 {
		t.Fatalf("a leg no round ran: %d rounds", n)
	}
}

func TestRoundCostTable(t *testing.T) {
	rs := &RoundSummary{Legs: []string{legNginx, legMetered, legLease}, Rounds: []Round{
		{Costs: map[string]Costs{
			legNginx:   {CPUUSPerReq: 26, UpstreamCPUUSPerReq: 19.5, RedisCPUUSPerReq: 0.1, Switches: &Switches{0.1, 0.2}, UpstreamSwitches: &Switches{0.28, 0.04}, RedisSwitches: &Switches{0, 0}},
			legMetered: {CPUUSPerReq: 48, UpstreamCPUUSPerReq: 25, RedisCPUUSPerReq: 9.25, Switches: &Switches{0.16, 0.36}, UpstreamSwitches: &Switches{0.44, 0.05}, RedisSwitches: &Switches{0.15, 0.01}},
		}},
	}}
	want := "| leg | rounds | target CPU µs/req | upstream CPU µs/req | Redis CPU µs/req | target sleeps / preempted per req | upstream sleeps / preempted per req | Redis sleeps / preempted per req |\n" +
		"| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" +
		"| nginx | 1 | 26.0 | 19.5 | 0.1 | 0.10 / 0.20 | 0.28 / 0.04 | 0.00 / 0.00 |\n" +
		"| tollgate metered | 1 | 48.0 | 25.0 | 9.2 | 0.16 / 0.36 | 0.44 / 0.05 | 0.15 / 0.01 |\n"
	if got := roundCostTable(rs); got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
	if got := roundCostTable(&RoundSummary{Legs: []string{legNginx}, Rounds: []Round{{}}}); got != "" {
		t.Fatalf("table of rounds without costs: %q", got)
	}
}
