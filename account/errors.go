package account

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// apiError is an answer other than 2xx, with seed 001's error codes where
// one applies.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return strconv.Itoa(e.status) + " " + e.code + ": " + e.msg }

func errUnauthorized(msg string) *apiError {
	return &apiError{http.StatusUnauthorized, "unauthorized", msg}
}

func errForbidden(msg string) *apiError { return &apiError{http.StatusForbidden, "forbidden", msg} }

func errInvalidRequest(msg string) *apiError {
	return &apiError{http.StatusBadRequest, "invalid_request", msg}
}

var (
	errStoreUnavailable = &apiError{http.StatusServiceUnavailable, "store_unavailable",
		"The billing store is temporarily unreachable. Retry shortly."}
	errNoSubscription = &apiError{http.StatusNotFound, "no_subscription",
		"This tenant has no subscription: it is pay-as-you-go."}
	errTenantNotFound = &apiError{http.StatusNotFound, "tenant_not_found",
		"The tenant named by X-Tenant-Id does not exist."}
)

// WriteError writes Tollgate's JSON error shape {"error": code, "message":
// msg}; exported so the API listener's catch-all can answer the same way.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}{code, msg})
}

func writeAPIError(w http.ResponseWriter, e *apiError) {
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tollgate"`)
	}
	WriteError(w, e.status, e.code, e.msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own response types reach here; they always marshal.
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal_error","message":"The answer could not be encoded."}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	// Billing answers are per tenant and change with every request.
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// methodNotAllowed answers the non-GET methods on the API's paths at the
// listener's root, so even a wrong method gets JSON.
func methodNotAllowed(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Allow", "GET, HEAD")
	WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "This endpoint only answers GET.")
}
