package quota

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestWriteHeaders(t *testing.T) {
	tc := newTestConfig()
	reset := utc(2025, 6, 1, 0, 0, 0)
	tests := []struct {
		name                            string
		d                               Decision
		limit, remaining, reset, warned string
	}{
		{"metered", Decision{Outcome: Admitted, Feature: tc.messages, Current: 3, Limit: 10, Ceiling: 10, Reset: reset},
			"10", "7", "1748736000", ""},
		{"metered warning", Decision{Outcome: Admitted, Feature: tc.messages, Current: 8, Limit: 10, Ceiling: 10, Warning: true, Reset: reset},
			"10", "2", "1748736000", "true"},
		{"grace past the limit", Decision{Outcome: Admitted, Feature: tc.apiCalls, Current: 11, Limit: 10, Ceiling: 11, Warning: true, Reset: reset},
			"10", "0", "1748736000", "true"},
		{"over limit", Decision{Outcome: OverLimit, Feature: tc.messages, Current: 10, Limit: 10, Ceiling: 10, Warning: true, Reset: reset},
			"10", "0", "1748736000", "true"},
		{"gauge has no reset", Decision{Outcome: Admitted, Feature: tc.agents, Current: 2, Limit: 5, Ceiling: 5},
			"5", "3", "", ""},
		{"unlimited", Decision{Outcome: Admitted, Feature: tc.messages, Current: 2, Limit: -1, Ceiling: -1, Reset: reset},
			"", "", "", ""},
		{"flags only", Decision{Outcome: Admitted}, "", "", "", ""},
		{"locked", Decision{Outcome: Locked, Feature: tc.integrations}, "", "", "", ""},
		{"failed open", Decision{Outcome: FailedOpen, Feature: tc.messages, Reset: reset}, "", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h fasthttp.ResponseHeader
			tt.d.WriteHeaders(&h)
			for _, c := range []struct{ name, want string }{
				{"X-Quota-Limit", tt.limit},
				{"X-Quota-Remaining", tt.remaining},
				{"X-Quota-Reset", tt.reset},
				{"X-Quota-Warning", tt.warned},
			} {
				if got := string(h.Peek(c.name)); got != c.want {
					t.Errorf("%s = %q, want %q", c.name, got, c.want)
				}
			}
		})
	}
}

func TestWriteHeadersReplacesUpstreamValues(t *testing.T) {
	var h fasthttp.ResponseHeader
	h.Set("X-Quota-Limit", "999999")
	d := Decision{Outcome: Admitted, Feature: newTestConfig().agents, Current: 1, Limit: 5}
	d.WriteHeaders(&h)
	if got := string(h.Peek("X-Quota-Limit")); got != "5" {
		t.Errorf("X-Quota-Limit = %q, want 5", got)
	}
}

func TestWriteHeadersDoesNotAllocate(t *testing.T) {
	tc := newTestConfig()
	d := Decision{Outcome: Admitted, Feature: tc.messages, Current: 8, Limit: 10, Ceiling: 10, Warning: true, Reset: utc(2025, 6, 1, 0, 0, 0)}
	var h fasthttp.ResponseHeader
	d.WriteHeaders(&h) // the header's own buffers grow once
	if n := testing.AllocsPerRun(200, func() { d.WriteHeaders(&h) }); n != 0 {
		t.Errorf("WriteHeaders allocates %.1f times per call, want 0", n)
	}
}

func TestRetryAfter(t *testing.T) {
	now := utc(2025, 5, 31, 23, 58, 0)
	tests := []struct {
		name  string
		reset time.Time
		want  int64
	}{
		{"whole seconds", now.Add(2 * time.Minute), 120},
		{"rounds up", now.Add(90*time.Second + time.Millisecond), 91},
		{"at least one", now.Add(time.Millisecond), 1},
		{"already past", now.Add(-time.Hour), 1},
		{"exactly now", now, 1},
		{"no reset (gauge)", time.Time{}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decision{Reset: tt.reset}
			if got := d.RetryAfter(now); got != tt.want {
				t.Errorf("RetryAfter = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestOutcomeString(t *testing.T) {
	for o, want := range map[Outcome]string{
		Admitted: "admitted", OverLimit: "over_limit", Locked: "locked", UnknownTenant: "unknown_tenant",
		Unavailable: "unavailable", FailedOpen: "failed_open", 0: "unknown",
	} {
		if got := o.String(); got != want {
			t.Errorf("Outcome(%d) = %q, want %q", o, got, want)
		}
	}
}
