package billing

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPutAndListInvoices(t *testing.T) {
	s := newStore(t)
	ctx := testCtx(t)
	acme, _ := mustTenant(t, s, "Acme", "mini")
	globex, _ := mustTenant(t, s, "Globex", "mini")
	day := func(d int) time.Time { return time.Date(2026, 1, d, 0, 0, 0, 0, time.UTC) }
	put := func(id, tenantID, status string, created time.Time) Invoice {
		t.Helper()
		in, err := s.PutInvoice(ctx, Invoice{ID: id, TenantID: tenantID, Number: "N-" + id, Status: status,
			AmountDueMinor: 1900, Currency: "USD", PeriodStart: mayStart, PeriodEnd: mayEnd,
			HostedURL: "https://pay.example/" + id, CreatedAt: created})
		if err != nil {
			t.Fatalf("put %s: %v", id, err)
		}
		return in
	}
	put("in_1", acme.ID, InvoicePaid, day(1))
	put("in_2", acme.ID, InvoiceOpen, day(2))
	put("in_3", acme.ID, InvoicePaid, day(3))
	put("in_4", acme.ID, InvoiceVoid, day(4))
	put("in_g", globex.ID, InvoicePaid, day(5))

	tests := []struct {
		name, tenantID string
		limit          int
		status         string
		want           []string
		wantErr        error
	}{
		{"all, newest first", acme.ID, 0, "", []string{"in_4", "in_3", "in_2", "in_1"}, nil},
		{"limit", acme.ID, 2, "", []string{"in_4", "in_3"}, nil},
		{"paid", acme.ID, 0, InvoicePaid, []string{"in_3", "in_1"}, nil},
		{"open", acme.ID, 0, InvoiceOpen, []string{"in_2"}, nil},
		{"other tenant", globex.ID, 0, "", []string{"in_g"}, nil},
		{"no invoices", "ten_nobody", 0, "", nil, nil},
		{"bad status", acme.ID, 0, "draft", nil, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListInvoices(ctx, tt.tenantID, tt.limit, tt.status)
			wantErr(t, err, tt.wantErr)
			var ids []string
			for _, in := range got {
				if in.TenantID != tt.tenantID {
					t.Fatalf("invoice of %s listed for %s", in.TenantID, tt.tenantID)
				}
				ids = append(ids, in.ID)
			}
			if !slices.Equal(ids, tt.want) {
				t.Fatalf("got %v, want %v", ids, tt.want)
			}
		})
	}

	// A provider update (open → paid) keeps the row and its creation time.
	updated, err := s.PutInvoice(ctx, Invoice{ID: "in_2", TenantID: acme.ID, Number: "N-2", Status: InvoicePaid,
		AmountDueMinor: 1900, AmountPaidMinor: 1900, Currency: "USD", PeriodStart: mayStart, PeriodEnd: mayEnd})
	if err != nil || updated.Status != InvoicePaid || updated.AmountPaidMinor != 1900 || !updated.CreatedAt.Equal(day(2)) {
		t.Fatalf("update = %+v, %v", updated, err)
	}
	generated, err := s.PutInvoice(ctx, Invoice{TenantID: acme.ID, Status: InvoiceOpen, AmountDueMinor: 1, Currency: "USD",
		PeriodStart: mayStart, PeriodEnd: mayEnd})
	if err != nil || !strings.HasPrefix(generated.ID, "in_") || generated.CreatedAt.IsZero() {
		t.Fatalf("generated = %+v, %v", generated, err)
	}
}

func TestPutInvoiceRefuses(t *testing.T) {
	s := newStore(t)
	acme, _ := mustTenant(t, s, "Acme", "mini")
	globex, _ := mustTenant(t, s, "Globex", "mini")
	ok := Invoice{ID: "in_x", TenantID: acme.ID, Status: InvoiceOpen, AmountDueMinor: 100, Currency: "USD",
		PeriodStart: mayStart, PeriodEnd: mayEnd}
	if _, err := s.PutInvoice(testCtx(t), ok); err != nil {
		t.Fatal(err)
	}
	mod := func(f func(*Invoice)) Invoice { in := ok; f(&in); return in }
	tests := []struct {
		name    string
		in      Invoice
		wantErr error
	}{
		{"another tenant's id", mod(func(in *Invoice) { in.TenantID = globex.ID }), ErrConflict},
		{"unknown tenant", mod(func(in *Invoice) { in.ID, in.TenantID = "in_y", "ten_missing" }), ErrTenantNotFound},
		{"no tenant", mod(func(in *Invoice) { in.TenantID = "" }), ErrInvalid},
		{"bad status", mod(func(in *Invoice) { in.Status = "draft" }), ErrInvalid},
		{"negative amount", mod(func(in *Invoice) { in.AmountPaidMinor = -1 }), ErrInvalid},
		{"bad currency", mod(func(in *Invoice) { in.Currency = "US" }), ErrInvalid},
		{"inverted period", mod(func(in *Invoice) { in.PeriodEnd = aprStart }), ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.PutInvoice(testCtx(t), tt.in)
			wantErr(t, err, tt.wantErr)
		})
	}
	got, _ := s.ListInvoices(testCtx(t), acme.ID, 0, "")
	if len(got) != 1 || got[0].TenantID != acme.ID || got[0].Status != InvoiceOpen {
		t.Fatalf("acme's invoice changed: %+v", got)
	}
}
