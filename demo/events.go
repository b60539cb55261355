package demo

import (
	"fmt"
	"net/http"
	"time"
)

// events streams a bounded run of server-sent events so the demo can show
// Tollgate forwarding a stream without buffering it.
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// Tells nginx-style intermediaries not to buffer; harmless elsewhere.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	ticker := time.NewTicker(s.tickEvery)
	defer ticker.Stop()
	for i := 1; i <= s.ticks; i++ {
		if i > 1 {
			select {
			case <-r.Context().Done():
				return
			case <-ticker.C:
			}
		}
		if _, err := fmt.Fprintf(w, "data: tick %d\n\n", i); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
