package harness

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHarnessSmoke runs the whole harness in its smallest mode (three
// scenarios, 1 s runs, the Go load generator, no nginx, no allocation
// benchmark) so CI proves `make bench` works end to end. Redis is a private
// redis-server when installed, else the test Redis, which must answer.
func TestHarnessSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts servers")
	}
	redisURL := os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if redisURL == "" {
		redisURL = "redis://127.0.0.1:6379/0"
	}
	out := t.TempDir()
	// The run takes about 15 s, but it builds two binaries first: from a
	// cold build cache on two cores busy with the rest of the suite, that
	// alone once took over two minutes. The bound is there to stop a hung
	// run, not to time a slow machine.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var log strings.Builder
	rep, err := Run(ctx, Options{
		Root: "../..", OutDir: out, Duration: time.Second, Warmup: 200 * time.Millisecond, Connections: 4,
		Scenarios: []string{"passthrough", "metered", "lease"}, Generator: "go", NoNginx: true, NoGoBench: true,
		Rate: 200, SharedRedisURL: redisURL, Log: io.MultiWriter(&log), Rounds: 1, RoundDuration: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("harness (needs Redis: a redis-server binary or %s): %v\n%s", redisURL, err, log.String())
	}
	if len(rep.Scenarios) != 3 {
		t.Fatalf("scenarios %+v", rep.Scenarios)
	}
	pass, met, lease := rep.scenario("passthrough"), rep.scenario("metered"), rep.scenario("lease")
	if pass == nil || met == nil || lease == nil || pass.run("direct") == nil || pass.run("tollgate") == nil ||
		met.run("tollgate") == nil || lease.run("tollgate") == nil {
		t.Fatalf("missing runs: %+v", rep.Scenarios)
	}
	for _, s := range rep.Scenarios {
		for _, r := range s.Runs {
			if r.Load.Requests == 0 || r.Expected != 1 || r.Paced == nil || r.Paced.Requests == 0 {
				t.Errorf("%s/%s: %d requests, %.3f with the expected status, paced %+v", s.Name, r.Target, r.Load.Requests, r.Expected, r.Paced)
			}
			// Every server waits for its clients between requests, so each
			// slept at least once in a timed part (how often is the host's).
			if r.Switches == nil || r.UpstreamSwitches == nil || r.Switches.Sleeps <= 0 || r.UpstreamSwitches.Sleeps <= 0 {
				t.Errorf("%s/%s: context switches not counted: %+v, upstream %+v", s.Name, r.Target, r.Switches, r.UpstreamSwitches)
			}
		}
	}
	m := met.run("tollgate")
	if rep.Machine.RedisPrivate && m.RedisSwitches == nil {
		t.Errorf("metered: the private Redis's context switches not counted")
	}
	if m.MonitorRequests != monitorRequests || m.RoundTripsPerReq < 1 || m.RoundTripCommands["evalsha"] == 0 {
		t.Errorf("metered round trips: %+v", m)
	}
	// Far below the limit the lease path is local: not even one Redis
	// command per request (exact mode runs 7), whatever the machine's load.
	if l := lease.run("tollgate"); l.RedisCommandsPerReq >= 1 || l.RoundTripsPerReq >= 1 {
		t.Errorf("lease: %.3f Redis commands/req, round trips %v", l.RedisCommandsPerReq, l.RoundTripCommands)
	}
	if _, ok := pass.Ratios["tollgate_over_direct_rps"]; !ok {
		t.Errorf("ratios %v", pass.Ratios)
	}
	if _, ok := lease.Ratios["over_metered_exact_rps"]; !ok {
		t.Errorf("lease ratios %v", lease.Ratios)
	}
	// One alternating round of the four Tollgate legs (no nginx here) and,
	// when Tollgate runs workers (workers: auto on more than one CPU), the
	// same three metered and unmetered legs on Tollgate as one process.
	legs := 4
	if rep.Machine.TollgateWorkers > 1 {
		legs = 7
		for _, k := range []string{"passthrough_workers_over_single_rps", "metered_workers_over_single_rps", "lease_workers_over_single_rps"} {
			if rep.Rounds == nil || rep.Rounds.Ratios[k].N != 1 {
				t.Errorf("no %s in the rounds: %+v", k, rep.Rounds)
			}
		}
	}
	if rs := rep.Rounds; rs == nil || len(rs.Rounds) != 1 || len(rs.Legs) != legs ||
		rs.Ratios["lease_over_unmetered_post_rps"].N != 1 ||
		rs.Ratios["metered_over_passthrough_rps"].N != 1 || rs.Ratios["lease_over_passthrough_rps"].N != 1 ||
		rs.Ratios[pacedAddedKey].N != 1 {
		t.Errorf("rounds %+v", rep.Rounds)
	}
	if rs := rep.Rounds; rs != nil {
		for _, leg := range rs.Legs {
			if c, n := medianCost(rs.Rounds, leg); n != len(rs.Rounds) || c.Switches == nil || c.UpstreamSwitches == nil {
				t.Errorf("round leg %s: costs %+v over %d rounds", leg, c, n)
			}
		}
	}
	// Every target of the issue is listed; the Go benchmarks did not run.
	byScenario := map[string]string{}
	for _, c := range rep.Targets {
		byScenario[c.Scenario] += c.Met + " "
	}
	if len(rep.Targets) != 9 || byScenario["go-bench"] != "n/a n/a n/a " || strings.Contains(byScenario["lease"], "n/a") {
		t.Errorf("targets %+v", rep.Targets)
	}
	if rep.Machine.HostStart == nil || rep.Machine.HostEnd == nil {
		t.Errorf("host cost not measured: start %+v, end %+v\n%s", rep.Machine.HostStart, rep.Machine.HostEnd, log.String())
	}
	md, err := os.ReadFile(filepath.Join(out, "latest.md"))
	if err != nil || !strings.Contains(string(md), "| metered | tollgate |") || !strings.Contains(string(md), "| lease | tollgate |") ||
		!strings.Contains(string(md), "Alternating rounds") || !strings.Contains(string(md), "a wake-up round trip") {
		t.Fatalf("latest.md: %v\n%s", err, md)
	}
	files, _ := filepath.Glob(filepath.Join(out, "*-metered.json"))
	if len(files) != 1 {
		t.Fatalf("metered json: %v", files)
	}
	var one Report
	b, _ := os.ReadFile(files[0])
	if err := json.Unmarshal(b, &one); err != nil || len(one.Scenarios) != 1 || one.Scenarios[0].Name != "metered" {
		t.Fatalf("metered json: %v %s", err, b)
	}
}
