package config

import (
	"errors"
	"fmt"
	"strconv"
)

// Error is one problem in a configuration. Parse collects every problem it
// finds and returns them joined, so a user can fix the file in one pass.
type Error struct {
	File string // the configuration file, as given to Load or Parse
	Key  string // dotted path such as plans[1].limits.agents, "env NAME" or "line N"
	Msg  string // what was expected, and what was found
}

func (e *Error) Error() string {
	s := e.Msg
	if e.Key != "" {
		s = e.Key + ": " + s
	}
	if e.File != "" {
		s = e.File + ": " + s
	}
	return s
}

// problems accumulates *Error values for one source file.
type problems struct {
	file string
	errs []error
}

func (p *problems) add(key, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (p *problems) err() error {
	return errors.Join(p.errs...)
}

// quote renders a user value for an error message, cut short so a pasted
// blob does not drown the message.
func quote(s string) string {
	const max = 60
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strconv.Quote(s)
}
