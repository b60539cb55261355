package demo

import "net/http"

// jsonFallback makes the mux's own 404 and 405 answers JSON like every other
// response. A catch-all "/" pattern would also turn wrong-method requests
// into 404s, so instead the mux is asked whether a pattern matched at all.
func jsonFallback(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// No pattern: h is the mux's plain-text 404, 405 or a redirect for
		// an unclean path. Run it against a recorder to learn which.
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		switch rec.status {
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", rec.header.Get("Allow"))
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+r.URL.Path)
		case http.StatusNotFound:
			writeError(w, http.StatusNotFound, "not_found", "no route for "+r.Method+" "+r.URL.Path)
		default:
			// Redirects (e.g. "/a//b" → "/a/b"): pass them through as is.
			h.ServeHTTP(w, r)
		}
	})
}

// statusRecorder keeps the status and headers and discards the body.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(p), nil
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}
