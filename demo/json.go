package demo

import (
	"encoding/json"
	"errors"
	"net/http"
)

// maxBody caps request bodies; the demo's payloads are a few short strings.
const maxBody = 1 << 20

type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The status line is already out, so an encoding error has nowhere to go.
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorBody{Error: code, Message: msg})
}

// decode reads a JSON object into dst and writes the error response itself
// when it fails, so handlers just return. Content-Type is not checked: the
// README's curl examples send JSON without one.
func decode(w http.ResponseWriter, r *http.Request, dst any) bool {
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(dst)
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds 1 MiB")
		return false
	}
	writeError(w, http.StatusBadRequest, "invalid_json", "request body is not a valid JSON object: "+err.Error())
	return false
}

// require answers 400 naming the first empty field, if any.
func require(w http.ResponseWriter, fields ...[2]string) bool {
	for _, f := range fields {
		if f[1] == "" {
			writeError(w, http.StatusBadRequest, "invalid_request", f[0]+" is required")
			return false
		}
	}
	return true
}
