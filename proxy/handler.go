// Package proxy is Tollgate's data plane: it identifies the tenant of each
// request, checks and reserves quota for metered routes, answers over-limit
// requests itself and forwards everything else to the upstream.
package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/quota"
	"github.com/tollgate/tollgate/tenant"
)

// TenantResolver finds the tenant of a request.
type TenantResolver interface {
	Resolve(ctx context.Context, h *fasthttp.RequestHeader) (string, error)
}

// QuotaStore reserves, releases and commits usage.
type QuotaStore interface {
	Reserve(ctx context.Context, c *quota.Check, d *quota.Decision) error
	Release(ctx context.Context, d *quota.Decision)
	Commit(ctx context.Context, d *quota.Decision, amount int64)
}

// Handler is the proxy's request handler.
type Handler struct {
	cfg     *config.Config
	tenants TenantResolver
	quota   QuotaStore
	fwd     *Forwarder
	log     *zap.Logger
	now     func() time.Time

	// messages holds each feature's error message template split around
	// its placeholders, indexed by Feature.Index.
	messages []messageTemplate

	mount *mounts // WithMount; nil when nothing is mounted

	usage UsageTracker // WithUsageTracker; nil when usage is not flushed
}

// UsageTracker learns which counters changed so they are flushed to
// billing; Touch must be cheap, it runs once per settled metered request.
type UsageTracker interface {
	Touch(counterKey string)
}

// WithUsageTracker reports every settled metered request's counter to t.
func WithUsageTracker(t UsageTracker) Option { return func(h *Handler) { h.usage = t } }

// Option configures a Handler.
type Option func(*Handler)

// WithLogger sets the logger; the default discards.
func WithLogger(l *zap.Logger) Option { return func(h *Handler) { h.log = l } }

// WithClock sets the clock used for Retry-After; tests move it.
func WithClock(now func() time.Time) Option { return func(h *Handler) { h.now = now } }

// NewHandler wires the proxy's parts together.
func NewHandler(cfg *config.Config, tenants TenantResolver, store QuotaStore, fwd *Forwarder, opts ...Option) *Handler {
	h := &Handler{
		cfg:     cfg,
		tenants: tenants,
		quota:   store,
		fwd:     fwd,
		log:     zap.NewNop(),
		now:     time.Now,
	}
	for _, o := range opts {
		o(h)
	}
	h.messages = make([]messageTemplate, len(cfg.Features))
	for _, f := range cfg.Features {
		h.messages[f.Index] = parseMessage(f.Message)
	}
	return h
}

var healthzPath = []byte("/healthz")

// requestState is one metered request's bookkeeping. It is pooled, with
// its response hook bound once, so a metered request costs no closure
// allocation; the forwarder calls the hook before Forward returns.
type requestState struct {
	check    quota.Check
	flags    [4]*config.Feature
	decision quota.Decision
	meter    *config.Meter
	// amount is what the route meters for this request, resolved before
	// forwarding (fixed or from the body).
	amount int64
	// charged is the amount read from the upstream response header.
	charged int64
	// chargeErr records a malformed amount header: nothing is charged.
	chargeErr bool
	// store and ctx are what the hook settles a gauge delete with.
	store QuotaStore
	ctx   context.Context
	hook  ResponseHook
}

var statePool = sync.Pool{New: func() any {
	st := new(requestState)
	st.hook = st.onResponse
	return st
}}

func (st *requestState) onResponse(status int, rh *fasthttp.ResponseHeader) {
	if st.meter == nil {
		return
	}
	if st.decision.Outcome == quota.Admitted {
		if st.isGaugeDelete() && isSuccess(status) {
			// Settled here, not in settle, so that the headers report the
			// usage after the delete, which the decrement's reply carries.
			// The forwarder calls the hook for every response it gets.
			st.store.Commit(st.ctx, &st.decision, st.amount)
		}
		st.decision.WriteHeaders(rh)
	}
	if st.meter.Source == config.AmountResponseHeader && isSuccess(status) {
		st.charged, st.chargeErr = parseAmountHeader(rh.Peek(st.meter.Header))
	}
}

// release returns st to the pool without the request it served.
func (st *requestState) release() {
	st.ctx = nil
	statePool.Put(st)
}

func (st *requestState) isGaugeDelete() bool {
	return st.meter.Feature != nil && st.meter.Feature.Kind == config.Gauge && st.amount < 0
}

// Serve is the fasthttp.RequestHandler of the proxy listener.
func (h *Handler) Serve(ctx *fasthttp.RequestCtx) {
	target := ctx.Request.Header.RequestURI()
	if len(target) < 2 || target[0] != '/' || target[1] != '/' {
		h.serve(ctx, ctx.Path())
		return
	}
	// A request-target starting with "//" is origin-form and goes upstream
	// as it came, where "//api/v1/x" is the path /api/v1/x. But fasthttp
	// reads such a target as scheme-relative (//host/path) when it holds
	// "://" anywhere, even in the query, or comes without a Host header: its
	// Path() would then drop the first segment, and
	// POST //api/v1/messages?next=x:// would dodge the meter of
	// /api/v1/messages. So the path is taken from the raw target here,
	// normalised as fasthttp normalises any other path.
	u := fasthttp.AcquireURI()
	h.serve(ctx, originPath(u, target))
	fasthttp.ReleaseURI(u)
}

// originPath returns the normalised path (percent-decoded, dot segments and
// duplicate slashes resolved) of the origin-form target, in u's storage.
// As fasthttp does, the path ends at the first '?' or '#'.
func originPath(u *fasthttp.URI, target []byte) []byte {
	if i := bytes.IndexAny(target, "?#"); i >= 0 {
		target = target[:i]
	}
	u.SetPathBytes(target)
	return u.Path()
}

// serve handles a request whose normalised path is path: /healthz, the
// mounts and the routes are matched on it.
func (h *Handler) serve(ctx *fasthttp.RequestCtx, path []byte) {
	if ctx.IsGet() && string(path) == string(healthzPath) {
		writeHealthz(ctx)
		return
	}
	if h.mount != nil && h.mount.dispatch(ctx, path) {
		return
	}

	tenantID, err := h.tenants.Resolve(ctx, &ctx.Request.Header)
	if err != nil {
		h.writeTenantError(ctx, err)
		return
	}

	// The normalised path (dot segments and duplicate slashes resolved) is
	// matched so that /api//v1/./messages cannot dodge a meter that the
	// upstream would still route to /api/v1/messages.
	route := h.cfg.Router.Match(ctx.Method(), path)
	if route == nil {
		_, _ = h.fwd.Forward(ctx, nil, nil)
		return
	}
	h.serveMetered(ctx, tenantID, route)
}

func (h *Handler) serveMetered(ctx *fasthttp.RequestCtx, tenantID string, route *config.Route) {
	var body []byte
	if route.NeedsBody {
		var ok bool
		body, ok = h.readBody(ctx)
		if !ok {
			return
		}
	}

	// The check lives in the pooled state: passed through the QuotaStore
	// interface it would otherwise escape, with its flags, to the heap.
	st := statePool.Get().(*requestState)
	defer st.release()
	check := &st.check
	*check = quota.Check{TenantID: tenantID, Meter: route.Meter, Flags: st.flags[:0]}
	for i := range route.Require {
		req := &route.Require[i]
		if req.When != nil {
			match, err := req.When.Match(body)
			if err != nil {
				msg := "Request body must be a JSON object: "
				if errors.Is(err, config.ErrFieldAmbiguous) {
					msg = "Request body is ambiguous: "
				}
				WriteJSONError(ctx, fasthttp.StatusBadRequest, "invalid_body", msg+err.Error())
				return
			}
			if !match {
				continue
			}
		}
		check.Flags = append(check.Flags, req.Flag)
	}
	if m := route.Meter; m != nil {
		switch m.Source {
		case config.AmountFixed:
			check.Amount = m.Amount
		case config.AmountBodyField:
			n, err := m.BodyAmount(body)
			if err != nil {
				WriteJSONError(ctx, fasthttp.StatusBadRequest, "invalid_body", "Request body field "+strconv.Quote(m.Field)+" must be a whole number >= 0: "+err.Error())
				return
			}
			check.Amount = n
		}
	}

	st.meter, st.amount, st.charged, st.chargeErr = route.Meter, check.Amount, 0, false
	st.store, st.ctx = h.quota, ctx
	d := &st.decision
	// The Redis client's own read/write/pool timeouts bound this call, so
	// a stalled Redis cannot hold the request past them.
	if err := h.quota.Reserve(ctx, check, d); err != nil {
		h.log.Warn("quota reserve failed", zap.String("tenant", tenantID), zap.Error(err))
	}

	switch d.Outcome {
	case quota.Admitted, quota.FailedOpen:
	case quota.OverLimit:
		h.writeOverLimit(ctx, d)
		return
	case quota.Locked:
		h.writeLocked(ctx, d)
		return
	case quota.UnknownTenant:
		writeUnknownTenant(ctx)
		return
	default: // Unavailable, or an outcome this handler does not know
		WriteJSONError(ctx, fasthttp.StatusServiceUnavailable, "quota_unavailable",
			"Usage limits cannot be checked right now. Retry shortly.")
		return
	}

	status, _ := h.fwd.Forward(ctx, body, st.hook)
	h.finish(ctx, st, status)
}

// settle settles a forwarded request's reservation: a success keeps what
// was reserved (and charges what is only known now); anything else gives
// the reservation back so a failed request never costs quota. An admitted
// gauge delete is settled earlier, by the response hook (onResponse).
func (h *Handler) settle(ctx context.Context, st *requestState, status int) {
	d := &st.decision
	m := st.meter
	if m == nil {
		return
	}
	if !isSuccess(status) {
		if d.Reserved != 0 {
			h.quota.Release(ctx, d)
		}
		return
	}
	switch {
	case m.Source == config.AmountResponseHeader:
		if st.chargeErr {
			h.log.Warn("upstream sent a malformed usage header; nothing charged",
				zap.String("header", m.Header), zap.String("feature", m.Feature.Name))
			return
		}
		if st.charged > 0 {
			h.quota.Commit(ctx, d, st.charged)
		}
	case d.Outcome == quota.FailedOpen:
		h.quota.Commit(ctx, d, st.amount)
	}
}

// finish settles the reservation, then marks the counter for the usage
// flush: the flush reads the settled value.
func (h *Handler) finish(ctx context.Context, st *requestState, status int) {
	h.settle(ctx, st, status)
	if h.usage != nil {
		if k := st.decision.CounterKey(); k != "" {
			h.usage.Touch(k)
		}
	}
}

// isSuccess is true for 2xx and for a completed WebSocket upgrade.
func isSuccess(status int) bool {
	return (status >= 200 && status < 300) || status == fasthttp.StatusSwitchingProtocols
}

// parseAmountHeader reads a non-negative decimal integer. A missing header
// charges nothing; anything else malformed is reported.
func parseAmountHeader(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' || n > (1<<62)/10 {
			return 0, true
		}
		n = n*10 + int64(c-'0')
	}
	return n, false
}

// readBody reads at most MaxBufferedBody bytes of the request body so body
// conditions and body amounts can be evaluated; the same bytes are then
// forwarded.
func (h *Handler) readBody(ctx *fasthttp.RequestCtx) ([]byte, bool) {
	limit := h.cfg.Upstream.MaxBufferedBody
	if cl := ctx.Request.Header.ContentLength(); cl > limit {
		writeBodyTooLarge(ctx, limit)
		return nil, false
	}
	var r io.Reader = ctx.RequestBodyStream()
	if r == nil {
		return ctx.Request.Body(), true
	}
	body, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		WriteJSONError(ctx, fasthttp.StatusBadRequest, "invalid_body", "Request body could not be read.")
		return nil, false
	}
	if len(body) > limit {
		writeBodyTooLarge(ctx, limit)
		return nil, false
	}
	return body, true
}

func writeBodyTooLarge(ctx *fasthttp.RequestCtx, limit int) {
	WriteJSONError(ctx, fasthttp.StatusRequestEntityTooLarge, "body_too_large",
		"Request body is larger than the "+strconv.Itoa(limit)+" bytes Tollgate reads to check this route.")
}

func writeHealthz(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"status":"ok"}`)
}

func (h *Handler) writeTenantError(ctx *fasthttp.RequestCtx, err error) {
	switch {
	case errors.Is(err, tenant.ErrMissing):
		WriteJSONError(ctx, fasthttp.StatusUnauthorized, "unauthorized", h.missingCredentialMessage())
	case errors.Is(err, tenant.ErrRepeated):
		// An ambiguous request, like two Content-Lengths, rather than a bad
		// credential: Tollgate and the upstream could each read another line.
		WriteJSONError(ctx, fasthttp.StatusBadRequest, "invalid_request",
			"Send the "+h.cfg.Tenant.Header+" header once: the request carries it more than once.")
	case errors.Is(err, tenant.ErrInvalid):
		WriteJSONError(ctx, fasthttp.StatusUnauthorized, "unauthorized", "The credential is malformed, expired or not signed correctly.")
	case errors.Is(err, tenant.ErrUnknown):
		writeUnknownTenant(ctx)
	default:
		h.log.Warn("tenant lookup failed", zap.Error(err))
		WriteJSONError(ctx, fasthttp.StatusServiceUnavailable, "tenant_lookup_unavailable",
			"The tenant could not be looked up right now. Retry shortly.")
	}
}

func (h *Handler) missingCredentialMessage() string {
	t := h.cfg.Tenant
	switch t.Source {
	case config.TenantHeader:
		return "Missing tenant: send the " + t.Header + " header."
	case config.TenantJWT:
		return "Missing credential: send " + t.Header + ": Bearer <token>."
	}
	return "Missing credential: send " + t.Header + ": Bearer <API key>."
}

func writeUnknownTenant(ctx *fasthttp.RequestCtx) {
	WriteJSONError(ctx, fasthttp.StatusUnauthorized, "unknown_tenant", "No tenant matches this credential.")
}

// writeOverLimit answers with seed 000's shapes: 402 with the plan for live
// resources (gauges), 429 with Retry-After for monthly counters.
func (h *Handler) writeOverLimit(ctx *fasthttp.RequestCtx, d *quota.Decision) {
	f := d.Feature
	msg := h.messages[f.Index].render(d)
	b := make([]byte, 0, 256)
	b = append(b, `{"error":"limit_exceeded",`...)
	if f.Kind == config.Gauge {
		b = append(b, `"plan":`...)
		b = AppendJSONString(b, d.PlanName)
		b = append(b, ',')
	}
	b = append(b, `"feature":`...)
	b = AppendJSONString(b, f.Name)
	b = append(b, `,"current":`...)
	b = strconv.AppendInt(b, d.Current, 10)
	b = append(b, `,"limit":`...)
	b = strconv.AppendInt(b, d.Limit, 10)
	b = append(b, `,"message":`...)
	b = AppendJSONString(b, msg)
	b = append(b, '}')

	if f.Kind == config.Gauge {
		ctx.SetStatusCode(fasthttp.StatusPaymentRequired)
	} else {
		ctx.SetStatusCode(fasthttp.StatusTooManyRequests)
		ctx.Response.Header.Set("Retry-After", strconv.FormatInt(d.RetryAfter(h.now()), 10))
		d.WriteHeaders(&ctx.Response.Header)
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

func (h *Handler) writeLocked(ctx *fasthttp.RequestCtx, d *quota.Decision) {
	f := d.Feature
	b := make([]byte, 0, 256)
	b = append(b, `{"error":`...)
	b = AppendJSONString(b, f.ErrorCode)
	b = append(b, `,"plan":`...)
	b = AppendJSONString(b, d.PlanName)
	b = append(b, `,"feature":`...)
	b = AppendJSONString(b, f.Name)
	b = append(b, `,"message":`...)
	b = AppendJSONString(b, h.messages[f.Index].render(d))
	b = append(b, '}')
	ctx.SetStatusCode(fasthttp.StatusPaymentRequired)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// messageTemplate is an error message split at its placeholders so that
// rendering is a walk over parts, not a series of string replacements.
type messageTemplate []messagePart

type messagePart struct {
	text string
	slot placeholder
}

type placeholder uint8

const (
	slotNone placeholder = iota
	slotLimit
	slotCurrent
	slotPlan
	slotFeature
)

var placeholders = map[string]placeholder{
	"{limit}":   slotLimit,
	"{current}": slotCurrent,
	"{plan}":    slotPlan,
	"{feature}": slotFeature,
}

func parseMessage(s string) messageTemplate {
	var t messageTemplate
	for len(s) > 0 {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			t = append(t, messagePart{text: s})
			break
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			t = append(t, messagePart{text: s})
			break
		}
		if slot, ok := placeholders[s[i:i+j+1]]; ok {
			t = append(t, messagePart{text: s[:i]}, messagePart{slot: slot})
			s = s[i+j+1:]
			continue
		}
		// Not a placeholder: keep the brace and look again right after
		// it, so "{{limit}}" still finds "{limit}".
		t = append(t, messagePart{text: s[:i+1]})
		s = s[i+1:]
	}
	return t
}

func (t messageTemplate) render(d *quota.Decision) string {
	var b strings.Builder
	for _, p := range t {
		switch p.slot {
		case slotNone:
			b.WriteString(p.text)
		case slotLimit:
			b.WriteString(strconv.FormatInt(d.Limit, 10))
		case slotCurrent:
			b.WriteString(strconv.FormatInt(d.Current, 10))
		case slotPlan:
			b.WriteString(d.PlanName)
		case slotFeature:
			b.WriteString(d.Feature.Name)
		}
	}
	return b.String()
}
