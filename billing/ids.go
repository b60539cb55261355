package billing

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"strings"
)

// keyEncoding turns 25 random bytes (200 bits) into exactly 40 characters,
// the same shape tenant.IssueKey emits, so the proxy's key parser accepts
// keys minted here.
var keyEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

const (
	keyPrefix = "tg_"
	// keyDisplayLen is how much of a key is stored for display: "tg_" and
	// five characters, too little to guess the other 175 bits.
	keyDisplayLen = len(keyPrefix) + 5
)

// NewAPIKey returns a fresh key: "tg_" and 40 lower-case base32 characters
// from crypto/rand.
func NewAPIKey() (string, error) {
	var raw [25]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("new api key: %w", err)
	}
	return keyPrefix + strings.ToLower(keyEncoding.EncodeToString(raw[:])), nil
}

// newID returns prefix + 20 hex characters (80 random bits), the shape of
// the admin API's tenant ids ("ten_…").
func newID(prefix string) (string, error) {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new %sid: %w", prefix, err)
	}
	return prefix + hex.EncodeToString(b[:]), nil
}
