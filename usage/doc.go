// Package usage carries the usage Redis admitted to the billing store
// (PostgreSQL) exactly once, and puts it back into Redis after Redis lost
// it.
//
// The Flusher, in every proxy, sends absolute snapshots of the live Redis
// counters, stamped with Redis' own clock; the billing side keeps, per
// counter, the newest snapshot of the current epoch. Retried, duplicated,
// concurrent and reordered batches therefore converge to Redis' value and
// can never count twice. The Restorer, when Redis has no epoch (fresh or
// wiped), rebuilds entitlements, API keys and this period's counts from
// PostgreSQL and starts a new epoch. See docs/usage.md.
package usage
