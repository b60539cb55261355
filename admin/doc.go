// Package admin serves the operator API on the API listener. PostgreSQL
// (package billing) is the source of truth: every change is committed there
// first, with an audit row, and then written through to Redis in the same
// request (entitlements built from the plan row, API key hashes), so the
// proxies enforce it on the next request. When Redis fails after the commit
// the change is kept, the caller gets 503 store_unavailable saying so, and
// Run writes the tenant through once Redis answers again. When a plan's
// terms change (a start updating it from the file), RefreshPlans has Run
// write through every tenant entitled to it, in the background. Each
// write-through of a tenant (a change's, Run's, SyncTenant) reads
// PostgreSQL and writes Redis holding the tenant's advisory lock in
// PostgreSQL (billing.Store.LockTenant) for at most 5 s, so the worker
// processes and replicas serving this API never interleave them: a key
// revoked on one is not written back by another's older read, and Redis
// ends on the plan PostgreSQL ended on.
//
// Every call needs "Authorization: Bearer <admin token>". Errors are
// {"error","message"}. A body is one JSON object with only known fields;
// a Content-Type other than application/json (in any case, parameters
// such as charset=utf-8 allowed) is 415 unsupported_media_type.
//
//	POST   /admin/v1/tenants {"name","plan"}            201 {"id","plan","api_key"}
//	GET    /admin/v1/tenants?limit=&after=              200 {"tenants":[…],"next":cursor|null}
//	GET    /admin/v1/tenants/{id}                       200 {"id","name","plan","status","created_at","subscription"}
//	PUT    /admin/v1/tenants/{id}/plan {"plan"}         200 {"id","plan"}
//	POST   /admin/v1/tenants/{id}/keys                  201 {"id","api_key","prefix","created_at"}
//	GET    /admin/v1/tenants/{id}/keys                  200 {"keys":[…]} (no secrets)
//	DELETE /admin/v1/tenants/{id}/keys/{key_id}         200 the revoked key
//	PUT    /admin/v1/tenants/{id}/gauges/{feature} {"count"}  200 {"feature","count"}
//	POST   /admin/v1/tenants/{id}/balance/credits {"amount_minor","currency","note"}  201 (200 on a retry)
//	PUT    /admin/v1/tenants/{id}/subscription {"plan","status","period_start","period_end","cancel_at_period_end"}  200
//	DELETE /admin/v1/tenants/{id}/subscription/cooldown 200 the subscription
//	GET    /admin/v1/audit?tenant_id=&limit=            200 {"entries":[…]} newest first
//
// A tenant's "status" is its live subscription's, "canceled" when only
// canceled ones remain, "none" when it never subscribed; "plan" is null
// without a live subscription. What the proxies enforce follows the live
// subscription only: without one (never subscribed, or canceled) the
// tenant is pay-as-you-go and gets the default plan, active, on calendar
// months, the same entitlement a restore of Redis writes.
//
// Credits are idempotent: the note identifies a credit within the tenant's
// current billing period (the ledger's unique (tenant, kind, period, note)),
// so a retried identical credit books nothing and answers 200 with the
// balance and "applied": false. Two distinct credits in one period need two
// notes. A credit's amount_minor is 1 to 10^15 (billing.MaxAmountMinor).
//
// A subscription PUT replaces the live subscription in place (or starts
// one) with the given bounds; the proxy's period anchor becomes
// period_start, except that bounds of exactly one calendar month in UTC keep
// calendar periods (anchor 0). PUT …/plan is an operator override without
// proration; like any plan switch it stamps last_tier_switch_at, which
// DELETE …/subscription/cooldown clears.
//
// Field errors beyond the named codes (a credit's amount or note, a
// gauge's count) are 400 invalid_json naming the field; a bad limit query
// parameter, and a path id or query parameter that is not valid UTF-8 or
// holds a NUL byte, is 400 invalid_query. Text PostgreSQL cannot store is
// refused before it is sent: a name with a NUL is 400 invalid_name, such a
// plan 400 invalid_plan, a note 400 invalid_json; should PostgreSQL refuse
// text all the same (SQLSTATE 22021, 22P05), the answer is the endpoint's
// 400, never 503. 503 store_unavailable means PostgreSQL
// did not answer (nothing changed) or, with a message saying the change is
// saved, that Redis did not; after a create or key issue that 503 also
// carries "id" and "api_key", since the key cannot be shown again.
package admin
