package harness

import (
	"strings"

	"github.com/tollgate/tollgate/bench/loadgen"
)

// Scenario is one kind of traffic the harness measures.
type Scenario struct {
	Name        string
	Description string
	// Targets are the servers this scenario loads, in order: "direct" (the
	// upstream itself), "nginx", "tollgate".
	Targets  []string
	Sequence []loadgen.Request
	Plan     string // plan of the scenario's tenants
	Zipf     bool   // many tenants, Zipf-distributed
	Multi    bool   // several Tollgate instances on one Redis
	// Single names the one-instance scenario with the same traffic that a
	// Multi scenario is compared with.
	Single string
	// Status is the answer every request should get.
	Status int
	// Paced adds an open-loop run at Options.Rate per target, for latency
	// compared at equal load rather than at each target's saturation.
	Paced bool
}

var (
	message = loadgen.Request{Method: "POST", Path: "/api/v1/messages", Body: `{"text":"hi"}`}
	// call is message's traffic on the lease-mode feature's route.
	call = loadgen.Request{Method: "POST", Path: "/api/v1/calls", Body: `{"text":"hi"}`}
	// AllScenarios in the order they run.
	AllScenarios = []Scenario{
		{Name: "passthrough", Description: "unmetered route (GET /api/v1/agents): tenant from the key cache, no Redis call, forwarded",
			Targets: []string{"direct", "nginx", "tollgate"}, Sequence: []loadgen.Request{{Method: "GET", Path: "/api/v1/agents"}},
			Plan: "bench", Status: 200, Paced: true},
		{Name: "metered", Description: "metered counter below its limit (POST /api/v1/messages): one reserve script, forwarded",
			Targets: []string{"tollgate"}, Sequence: []loadgen.Request{message}, Plan: "bench", Status: 201, Paced: true},
		{Name: "lease", Description: "metered counter in lease mode below its limit (POST /api/v1/calls, `mode: lease`): admitted from the instance's leased chunk, about one lease script per chunk, forwarded",
			Targets: []string{"tollgate"}, Sequence: []loadgen.Request{call}, Plan: "bench", Status: 201, Paced: true},
		{Name: "gauge", Description: "gauge create then delete in turn (POST /api/v1/agents, DELETE /api/v1/agents/{id}): reserve on create, decrement after the 2xx of a delete",
			Targets: []string{"tollgate"}, Sequence: []loadgen.Request{
				{Method: "POST", Path: "/api/v1/agents", Body: `{"name":"a"}`},
				{Method: "DELETE", Path: "/api/v1/agents/ag_{n}"},
			}, Plan: "bench", Status: 0},
		{Name: "at-limit", Description: "every request over the limit (plan with 0 messages): Tollgate answers 429 itself, nothing forwarded",
			Targets: []string{"tollgate"}, Sequence: []loadgen.Request{message}, Plan: "capped", Status: 429},
		{Name: "zipf", Description: "metered POST /api/v1/messages from 1,000 tenants, keys picked per request with Zipf(s=1.1)",
			Targets: []string{"tollgate"}, Sequence: []loadgen.Request{message}, Plan: "bench", Zipf: true, Status: 201},
		{Name: "multi", Description: "metered POST /api/v1/messages spread over 4 Tollgate instances sharing one Redis",
			Targets: []string{"tollgate"}, Sequence: []loadgen.Request{message}, Plan: "bench", Multi: true, Single: "metered", Status: 201},
		{Name: "lease-multi", Description: "lease-mode POST /api/v1/calls spread over 4 Tollgate instances sharing one Redis, each holding its own lease",
			Targets: []string{"tollgate"}, Sequence: []loadgen.Request{call}, Plan: "bench", Multi: true, Single: "lease", Status: 201},
	}
)

func scenarioByName(name string) *Scenario {
	for i := range AllScenarios {
		if AllScenarios[i].Name == name {
			return &AllScenarios[i]
		}
	}
	return nil
}

func scenarioNames() string {
	var names []string
	for _, s := range AllScenarios {
		names = append(names, s.Name)
	}
	return strings.Join(names, ", ")
}
