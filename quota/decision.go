package quota

import (
	"time"

	"github.com/tollgate/tollgate/config"
)

// Check is what one request needs: its tenant, its meter (if any) with the
// resolved amount, and the flags it requires.
type Check struct {
	TenantID string
	Meter    *config.Meter // nil: flags only
	// Amount is the resolved amount (fixed or from the body); ignored for
	// AmountResponseHeader, which reserves 0 and admits while used < ceiling.
	Amount int64
	Flags  []*config.Feature // required flags, already filtered by body conditions
}

// Outcome is what the proxy does with a request.
type Outcome uint8

const (
	Admitted      Outcome = iota + 1 // forward; Reserved units (if any) are already counted
	OverLimit                        // answer 402 (gauge) / 429 (metered)
	Locked                           // a required flag is off: answer 402 with Feature.ErrorCode
	UnknownTenant                    // no entitlement hash: answer 401
	Unavailable                      // Redis failed/timed out and the feature fails closed: answer 503
	FailedOpen                       // Redis failed/timed out and the feature fails open: forward, count locally on commit
)

func (o Outcome) String() string {
	switch o {
	case Admitted:
		return "admitted"
	case OverLimit:
		return "over_limit"
	case Locked:
		return "locked"
	case UnknownTenant:
		return "unknown_tenant"
	case Unavailable:
		return "unavailable"
	case FailedOpen:
		return "failed_open"
	}
	return "unknown"
}

// Decision is Reserve's verdict on one request, and what Release and Commit
// need to settle it afterwards. It is a plain value the caller can keep on
// its stack.
type Decision struct {
	Outcome  Outcome
	Feature  *config.Feature // the meter's feature, or the locked flag for Locked
	PlanName string          // display name; filled for OverLimit and Locked
	Current  int64           // usage after this request's reservation (Admitted) or at rejection (OverLimit)
	Limit    int64           // -1 unlimited
	Ceiling  int64           // floor(limit*grace + 1e-9); -1 unlimited
	Warning  bool            // Current >= Warning*Limit (never for unlimited)
	Reset    time.Time       // period end for metered features (zero for gauges)
	Reserved int64           // units counted at reserve time, to give back on Release

	// key is the counter the request touches and mode how Reserve used it,
	// so Release and Commit need no period or key recomputation.
	key  string
	mode mode
	// tenant is the request's tenant, for the entitlement a gauge delete's
	// Commit reads.
	tenant string
	// lease is the lease-mode state the units came from; nil in exact mode.
	lease *leaseState
}

// mode is how a request uses its counter; the values are the script's.
type mode uint8

const (
	modeReserve  mode = 1 // count Amount now, admit iff used+amount <= ceiling
	modeResponse mode = 2 // count later (Commit), admit iff used < ceiling
	modeFlags    mode = 3 // no meter
	modeDelete   mode = 4 // gauge decrement later (Commit), always admitted
	// modeMetered is added to the mode of metered features: the script then
	// also checks the anchor the period was computed with.
	modeMetered mode = 4
)

// boxed script arguments, so passing them allocates nothing.
var modeArgs = [...]any{0, 1, 2, 3, 4, 5, 6}
