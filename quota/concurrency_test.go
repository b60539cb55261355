package quota

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tollgate/tollgate/config"
)

// TestConcurrentReserve races many requests for the last units of a limit,
// on one or several proxies (each with its own Redis client): exactly the
// limit may pass.
func TestConcurrentReserve(t *testing.T) {
	tc := newTestConfig()
	tests := []struct {
		name       string
		feature    *config.Feature
		limit      int64
		goroutines int
		stores     int
	}{
		{"gauge limit 5", tc.agents, 5, 500, 1},
		{"metered limit 250", tc.messages, 250, 2000, 1},
		{"metered limit 250 on 4 stores", tc.messages, 250, 2000, 4},
		{"gauge limit 5 on 4 stores", tc.agents, 5, 500, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stores := make([]*Store, tt.stores)
			for i := range stores {
				stores[i] = newStore(t, testClient(t), tc.Config)
			}
			rdb := testClient(t)
			id := newTenant(t, stores[0], rdb, tc.PlanBySlug["free"], 0, map[string]int64{tt.feature.Name: tt.limit})

			var admitted, over, other atomic.Int64
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range tt.goroutines {
				wg.Add(1)
				go func(s *Store) {
					defer wg.Done()
					<-start
					var d Decision
					err := s.Reserve(context.Background(), &Check{TenantID: id, Meter: fixed(tt.feature, 1), Amount: 1}, &d)
					switch {
					case err != nil:
						t.Errorf("Reserve: %v", err)
						other.Add(1)
					case d.Outcome == Admitted:
						admitted.Add(1)
					case d.Outcome == OverLimit:
						over.Add(1)
					default:
						other.Add(1)
					}
				}(stores[i%len(stores)])
			}
			close(start)
			wg.Wait()

			if admitted.Load() != tt.limit || over.Load() != int64(tt.goroutines)-tt.limit || other.Load() != 0 {
				t.Errorf("admitted %d, over limit %d, other %d; want %d, %d, 0",
					admitted.Load(), over.Load(), other.Load(), tt.limit, int64(tt.goroutines)-tt.limit)
			}
			if n := usage(t, stores[0], id, tt.feature); n != tt.limit {
				t.Errorf("usage = %d, want %d", n, tt.limit)
			}
		})
	}
}
