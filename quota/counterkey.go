package quota

// CounterKey is the Redis counter an admitted (or failed-open) request
// reserved on or settles on — tg:{tid}:m:<feature>:<periodStart> or
// tg:{tid}:g:<feature> — and "" when the request changed no counter (flags
// only, over limit, locked, unknown tenant, unavailable). The usage flusher
// marks it dirty.
func (d *Decision) CounterKey() string {
	if d.Outcome != Admitted && d.Outcome != FailedOpen {
		return ""
	}
	return d.key
}
