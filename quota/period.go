package quota

import "time"

// Period returns the billing period [start, end) that contains now.
//
// anchor 0 means calendar months in UTC. Any other anchor (unix seconds)
// means monthly periods that start on the anchor's day of month and time of
// day, in UTC; in a month too short for that day the period starts on the
// month's last day, and the next month goes back to the anchor's day (anchor
// Jan 31 → Feb 28/29 → Mar 31). The anchor itself may lie in the past or the
// future: the same rule extends in both directions. An instant exactly on a
// boundary belongs to the period it starts.
func Period(anchor int64, now time.Time) (start, end time.Time) {
	now = now.UTC()
	y, m, _ := now.Date()
	if anchor == 0 {
		start = time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	}
	a := time.Unix(anchor, 0).UTC()
	start = anniversary(a, y, m)
	if start.After(now) {
		y, m = shiftMonth(y, m, -1)
		start = anniversary(a, y, m)
	}
	y, m = shiftMonth(y, m, 1)
	return start, anniversary(a, y, m)
}

// Anchor is the anchor of a subscription period [start, end): 0 (calendar
// months) when it is exactly one calendar month in UTC, so such
// subscriptions keep calendar periods; its start otherwise, so periods run
// monthly from the start whatever the subscription's length. The admin
// API's write-through and the account API's PostgreSQL fallback both use
// it, so they agree on a tenant's period.
func Anchor(start, end time.Time) int64 {
	ms, me := Period(0, start)
	if start.Equal(ms) && end.Equal(me) {
		return 0
	}
	return start.Unix()
}

// anniversary is the anchor's day and clock in month m of year y, clamped
// to the month's last day.
func anniversary(a time.Time, y int, m time.Month) time.Time {
	d := a.Day()
	if last := daysIn(y, m); d > last {
		d = last
	}
	h, mi, s := a.Clock()
	return time.Date(y, m, d, h, mi, s, 0, time.UTC)
}

func shiftMonth(y int, m time.Month, n int) (int, time.Month) {
	t := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC).AddDate(0, n, 0)
	return t.Year(), t.Month()
}

func daysIn(y int, m time.Month) int {
	// Day 0 of the next month normalises to the last day of this one.
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
