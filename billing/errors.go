package billing

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// The three families callers map to answers: ErrNotFound → 404,
// ErrConflict → 409, ErrInvalid → 400. The specific errors below wrap one of
// them, so errors.Is works with either.
var (
	ErrNotFound = errors.New("billing: not found")
	ErrConflict = errors.New("billing: conflict")
	ErrInvalid  = errors.New("billing: invalid")
)

var (
	ErrTenantNotFound = fmt.Errorf("%w: tenant", ErrNotFound)
	ErrPlanNotFound   = fmt.Errorf("%w: plan", ErrNotFound)
	ErrKeyNotFound    = fmt.Errorf("%w: api key", ErrNotFound)
	// ErrNoSubscription: the tenant has no live subscription (it is
	// pay-as-you-go).
	ErrNoSubscription = fmt.Errorf("%w: no live subscription", ErrNotFound)
	// ErrPlanInactive: the plan exists but is not offered any more.
	ErrPlanInactive = fmt.Errorf("%w: plan is not active", ErrInvalid)
)

// PostgreSQL error codes this package turns into the errors above.
const (
	pgUniqueViolation     = "23505"
	pgForeignKeyViolation = "23503"
	pgCheckViolation      = "23514"
	// A value or a sum beyond its type (a balance past int64): the input
	// is what cannot be stored, so retrying cannot help.
	pgNumericOutOfRange = "22003"
	// Text PostgreSQL cannot store: invalid UTF-8 or a NUL byte (22021),
	// or a character the database encoding lacks (22P05).
	pgCharacterNotInRepertoire = "22021"
	pgUntranslatableCharacter  = "22P05"
)

func pgCode(err error) (code, constraint string) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code, pe.ConstraintName
	}
	return "", ""
}

// classify maps constraint violations to this package's errors and keeps
// the driver error in the chain for logs.
func classify(op string, err error) error {
	code, constraint := pgCode(err)
	switch code {
	case pgUniqueViolation:
		return fmt.Errorf("%s: %w (%s): %w", op, ErrConflict, constraint, err)
	case pgCheckViolation:
		return fmt.Errorf("%s: %w (%s): %w", op, ErrInvalid, constraint, err)
	case pgNumericOutOfRange:
		return fmt.Errorf("%s: %w: a value or sum is out of range: %w", op, ErrInvalid, err)
	case pgCharacterNotInRepertoire, pgUntranslatableCharacter:
		return fmt.Errorf("%s: %w: text it cannot store (a NUL byte, invalid UTF-8, a character the database encoding lacks): %w", op, ErrInvalid, err)
	case pgForeignKeyViolation:
		switch constraint {
		case "subscriptions_plan_slug_fkey":
			return fmt.Errorf("%s: %w: %w", op, ErrPlanNotFound, err)
		default:
			return fmt.Errorf("%s: %w: %w", op, ErrTenantNotFound, err)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

func invalid(op, format string, args ...any) error {
	return fmt.Errorf("%s: %w: %s", op, ErrInvalid, fmt.Sprintf(format, args...))
}
