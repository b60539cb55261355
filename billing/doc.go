// Package billing is Tollgate's source of truth in PostgreSQL: tenants, API
// keys, plans, subscriptions, usage flushed by the proxies, invoices, the
// balance ledger and the audit log. Redis holds what the proxy needs on the
// request path; this package holds what must survive and be audited.
//
// The schema is created by Migrate from the SQL files embedded from
// migrations/. docs/billing.md describes the tables and why usage flushes are
// applied exactly once.
package billing
