package usage

import (
	"bytes"
	"testing"
)

// FuzzDecodeBatch: whatever arrives at the ingest endpoint, decoding never
// panics, and a batch it accepts is one Validate accepts too (no negative
// counts, no malformed tenants or features reach the store).
func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`{"batch_id":"b1","proxy_id":"p","epoch":1,"items":[{"tenant_id":"ten_1","feature":"messages","period_start":1761955200,"period_end":1764547200,"used":5,"observed_at_us":1}]}`))
	f.Add([]byte(`{"batch_id":"b1","proxy_id":"p","epoch":1,"items":[{"tenant_id":"ten_1","feature":"agents","period_start":0,"period_end":0,"used":2,"observed_at_us":1}]}`))
	f.Add([]byte(`{"batch_id":"b1","epoch":1,"items":[{"used":-1}]}`))
	f.Add([]byte(`{}{}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := decodeBatch(bytes.NewReader(data))
		if err != nil {
			return
		}
		if verr := b.Validate(); verr != nil {
			t.Fatalf("decodeBatch accepted a batch Validate refuses: %v", verr)
		}
		for _, it := range b.Items {
			if it.Used < 0 {
				t.Fatalf("negative count accepted: %+v", it)
			}
		}
	})
}
