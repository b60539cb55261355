package quota

import (
	"math/rand/v2"
	"testing"
	"time"
)

func utc(y int, m time.Month, d, h, mi, s int) time.Time {
	return time.Date(y, m, d, h, mi, s, 0, time.UTC)
}

func TestPeriod(t *testing.T) {
	jan15 := utc(2024, 1, 15, 10, 30, 0).Unix()
	jan31 := utc(2023, 1, 31, 0, 0, 0).Unix()
	jan31Leap := utc(2024, 1, 31, 0, 0, 0).Unix()
	jan31Late := utc(2024, 1, 31, 23, 0, 0).Unix()
	leapDay := utc(2024, 2, 29, 6, 0, 0).Unix()
	jan30 := utc(2024, 1, 30, 0, 0, 0).Unix()
	mar31 := utc(2024, 3, 31, 0, 0, 0).Unix()
	dec20 := utc(2023, 12, 20, 0, 0, 0).Unix()
	future := utc(2030, 6, 10, 8, 0, 0).Unix()
	future31 := utc(2030, 1, 31, 0, 0, 0).Unix()
	plus14 := time.FixedZone("UTC+14", 14*3600)

	tests := []struct {
		name       string
		anchor     int64
		now        time.Time
		start, end time.Time
	}{
		{"calendar mid-month", 0, utc(2024, 3, 15, 12, 0, 0), utc(2024, 3, 1, 0, 0, 0), utc(2024, 4, 1, 0, 0, 0)},
		{"calendar on boundary is new period", 0, utc(2024, 4, 1, 0, 0, 0), utc(2024, 4, 1, 0, 0, 0), utc(2024, 5, 1, 0, 0, 0)},
		{"calendar last nanosecond", 0, utc(2024, 3, 31, 23, 59, 59).Add(999999999), utc(2024, 3, 1, 0, 0, 0), utc(2024, 4, 1, 0, 0, 0)},
		{"calendar december", 0, utc(2024, 12, 31, 23, 0, 0), utc(2024, 12, 1, 0, 0, 0), utc(2025, 1, 1, 0, 0, 0)},
		{"calendar leap february", 0, utc(2024, 2, 29, 12, 0, 0), utc(2024, 2, 1, 0, 0, 0), utc(2024, 3, 1, 0, 0, 0)},
		{"calendar is UTC, not local", 0, time.Date(2024, 4, 1, 5, 0, 0, 0, plus14), utc(2024, 3, 1, 0, 0, 0), utc(2024, 4, 1, 0, 0, 0)},
		{"anchored after this month's day", jan15, utc(2024, 3, 20, 0, 0, 0), utc(2024, 3, 15, 10, 30, 0), utc(2024, 4, 15, 10, 30, 0)},
		{"anchored before this month's day", jan15, utc(2024, 3, 15, 10, 29, 59), utc(2024, 2, 15, 10, 30, 0), utc(2024, 3, 15, 10, 30, 0)},
		{"anchored exactly on boundary", jan15, utc(2024, 3, 15, 10, 30, 0), utc(2024, 3, 15, 10, 30, 0), utc(2024, 4, 15, 10, 30, 0)},
		{"anchored at the anchor itself", jan15, time.Unix(jan15, 0), utc(2024, 1, 15, 10, 30, 0), utc(2024, 2, 15, 10, 30, 0)},
		{"31st clamps to feb 28", jan31, utc(2023, 2, 10, 0, 0, 0), utc(2023, 1, 31, 0, 0, 0), utc(2023, 2, 28, 0, 0, 0)},
		{"31st returns to mar 31", jan31, utc(2023, 3, 1, 0, 0, 0), utc(2023, 2, 28, 0, 0, 0), utc(2023, 3, 31, 0, 0, 0)},
		{"31st clamps to feb 29 in leap year", jan31Leap, utc(2024, 2, 29, 12, 0, 0), utc(2024, 2, 29, 0, 0, 0), utc(2024, 3, 31, 0, 0, 0)},
		{"31st clamps to apr 30", mar31, utc(2024, 4, 30, 12, 0, 0), utc(2024, 4, 30, 0, 0, 0), utc(2024, 5, 31, 0, 0, 0)},
		{"leap day anchor in common year", leapDay, utc(2025, 2, 28, 12, 0, 0), utc(2025, 2, 28, 6, 0, 0), utc(2025, 3, 29, 6, 0, 0)},
		{"leap day anchor before clamp time", leapDay, utc(2025, 2, 28, 5, 0, 0), utc(2025, 1, 29, 6, 0, 0), utc(2025, 2, 28, 6, 0, 0)},
		{"30th before leap clamp", jan30, utc(2024, 2, 28, 23, 0, 0), utc(2024, 1, 30, 0, 0, 0), utc(2024, 2, 29, 0, 0, 0)},
		{"30th on leap clamp", jan30, utc(2024, 2, 29, 0, 0, 0), utc(2024, 2, 29, 0, 0, 0), utc(2024, 3, 30, 0, 0, 0)},
		{"clamped boundary keeps time of day", jan31Late, utc(2024, 2, 29, 22, 59, 59), utc(2024, 1, 31, 23, 0, 0), utc(2024, 2, 29, 23, 0, 0)},
		{"clamped boundary exactly", jan31Late, utc(2024, 2, 29, 23, 0, 0), utc(2024, 2, 29, 23, 0, 0), utc(2024, 3, 31, 23, 0, 0)},
		{"anchored across new year", dec20, utc(2024, 1, 5, 0, 0, 0), utc(2023, 12, 20, 0, 0, 0), utc(2024, 1, 20, 0, 0, 0)},
		{"future anchor", future, utc(2024, 3, 20, 0, 0, 0), utc(2024, 3, 10, 8, 0, 0), utc(2024, 4, 10, 8, 0, 0)},
		{"future anchor before its day", future, utc(2024, 3, 10, 7, 59, 59), utc(2024, 2, 10, 8, 0, 0), utc(2024, 3, 10, 8, 0, 0)},
		{"future 31st anchor clamps", future31, utc(2024, 4, 15, 0, 0, 0), utc(2024, 3, 31, 0, 0, 0), utc(2024, 4, 30, 0, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start, end := Period(tt.anchor, tt.now)
			if !start.Equal(tt.start) || !end.Equal(tt.end) {
				t.Errorf("Period(%d, %s) = [%s, %s), want [%s, %s)", tt.anchor, tt.now, start, end, tt.start, tt.end)
			}
			if start.Location() != time.UTC || end.Location() != time.UTC {
				t.Errorf("Period returned non-UTC times %s %s", start.Location(), end.Location())
			}
		})
	}
}

func TestAnchor(t *testing.T) {
	plus2 := time.FixedZone("UTC+2", 2*3600)
	tests := []struct {
		name       string
		start, end time.Time
		want       int64
	}{
		{"calendar month", utc(2026, 5, 1, 0, 0, 0), utc(2026, 6, 1, 0, 0, 0), 0},
		{"calendar february", utc(2026, 2, 1, 0, 0, 0), utc(2026, 3, 1, 0, 0, 0), 0},
		{"calendar december", utc(2025, 12, 1, 0, 0, 0), utc(2026, 1, 1, 0, 0, 0), 0},
		{"calendar month in another zone", time.Date(2026, 5, 1, 2, 0, 0, 0, plus2), time.Date(2026, 6, 1, 2, 0, 0, 0, plus2), 0},
		{"a local calendar month is not UTC's", time.Date(2026, 5, 1, 0, 0, 0, 0, plus2), time.Date(2026, 6, 1, 0, 0, 0, 0, plus2),
			utc(2026, 4, 30, 22, 0, 0).Unix()},
		{"mid-month", utc(2026, 1, 15, 0, 0, 0), utc(2026, 2, 15, 0, 0, 0), utc(2026, 1, 15, 0, 0, 0).Unix()},
		{"first of the month at a later time", utc(2026, 3, 1, 8, 0, 0), utc(2026, 4, 1, 8, 0, 0), utc(2026, 3, 1, 8, 0, 0).Unix()},
		{"yearly from the first", utc(2026, 1, 1, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0), utc(2026, 1, 1, 0, 0, 0).Unix()},
		{"two calendar months", utc(2026, 1, 1, 0, 0, 0), utc(2026, 3, 1, 0, 0, 0), utc(2026, 1, 1, 0, 0, 0).Unix()},
		{"a second short of a month", utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 31, 23, 59, 59), utc(2026, 1, 1, 0, 0, 0).Unix()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Anchor(tt.start, tt.end)
			if got != tt.want {
				t.Fatalf("Anchor(%s, %s) = %d, want %d", tt.start, tt.end, got, tt.want)
			}
			// Either way the first period starts with the subscription.
			if start, _ := Period(got, tt.start); !start.Equal(tt.start) {
				t.Fatalf("first period starts %s, want %s", start, tt.start)
			}
		})
	}
}

// TestPeriodContiguous checks, over random anchors and instants, that
// periods contain now, last 28–31 days and tile time without gaps.
func TestPeriodContiguous(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	lo, hi := utc(2000, 1, 1, 0, 0, 0).Unix(), utc(2040, 1, 1, 0, 0, 0).Unix()
	for range 2000 {
		anchor := lo + r.Int64N(hi-lo)
		if r.IntN(10) == 0 {
			anchor = 0
		}
		now := time.Unix(lo+r.Int64N(hi-lo), r.Int64N(1e9))
		start, end := Period(anchor, now)
		if now.Before(start) || !now.Before(end) {
			t.Fatalf("Period(%d, %s) = [%s, %s) does not contain now", anchor, now, start, end)
		}
		if days := end.Sub(start).Hours() / 24; days < 28 || days > 31 {
			t.Fatalf("Period(%d, %s) lasts %.2f days", anchor, now, days)
		}
		if next, _ := Period(anchor, end); !next.Equal(end) {
			t.Fatalf("Period(%d, %s): next period starts %s, want %s", anchor, now, next, end)
		}
		if prev, prevEnd := Period(anchor, start.Add(-time.Nanosecond)); !prevEnd.Equal(start) || !prev.Before(start) {
			t.Fatalf("Period(%d, %s): previous period [%s, %s) does not end at %s", anchor, now, prev, prevEnd, start)
		}
	}
}
