package policy

import (
	"fmt"
	"strings"
)

// Scope is a permission in Particle's vocabulary, "resource[.sub]:action",
// such as "devices:list" or "devices.function:call". An endpoint requires
// exactly one scope; a user holds its own scopes plus those of its roles.
// Scopes compare as plain strings: there are no wildcards and no hierarchy,
// so "devices:get" does not imply "devices.variable:get".
type Scope string

// ScopeSyntax describes a valid scope, for error messages and documentation.
const ScopeSyntax = `resource[.sub]:action, each part a lowercase letter followed by lowercase letters, digits, "_" or "-", such as "devices:list" or "devices.function:call"`

// ParseScope checks that s is a valid scope and returns it.
func ParseScope(s string) (Scope, error) {
	if s == "" {
		return "", fmt.Errorf("scope is empty; write one such as %q", "devices:list")
	}
	resource, action, ok := strings.Cut(s, ":")
	if !ok {
		return "", fmt.Errorf("scope %q has no \":\" before its action; write it as %s", s, ScopeSyntax)
	}
	if strings.Contains(action, ":") {
		return "", fmt.Errorf("scope %q has more than one \":\"; write it as %s", s, ScopeSyntax)
	}
	if action == "" {
		return "", fmt.Errorf("scope %q has an empty action after \":\"; write it as %s", s, ScopeSyntax)
	}
	if err := checkScopePart(s, "action", action); err != nil {
		return "", err
	}
	if resource == "" {
		return "", fmt.Errorf("scope %q has an empty resource before \":\"; write it as %s", s, ScopeSyntax)
	}
	for part := range strings.SplitSeq(resource, ".") {
		if part == "" {
			return "", fmt.Errorf("scope %q has an empty resource part (a leading, trailing or doubled \".\"); write it as %s", s, ScopeSyntax)
		}
		if err := checkScopePart(s, "resource part", part); err != nil {
			return "", err
		}
	}
	return Scope(s), nil
}

// checkScopePart checks one non-empty part of a scope against [a-z][a-z0-9_-]*.
func checkScopePart(scope, what, part string) error {
	if c := part[0]; c < 'a' || c > 'z' {
		return fmt.Errorf("scope %q: %s %q must begin with a lowercase letter; write the scope as %s", scope, what, part, ScopeSyntax)
	}
	for i := 1; i < len(part); i++ {
		c := part[i]
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' {
			continue
		}
		return fmt.Errorf("scope %q: %s %q contains %q; use only lowercase letters, digits, \"_\" and \"-\", as in %s", scope, what, part, c, ScopeSyntax)
	}
	return nil
}

// ParseScopes parses each of ss in order; the error names the first bad one
// by its position and value. A nil or empty ss gives a nil slice.
func ParseScopes(ss []string) ([]Scope, error) {
	if len(ss) == 0 {
		return nil, nil
	}
	scopes := make([]Scope, len(ss))
	for i, s := range ss {
		sc, err := ParseScope(s)
		if err != nil {
			return nil, fmt.Errorf("scope %d of %d: %w", i+1, len(ss), err)
		}
		scopes[i] = sc
	}
	return scopes, nil
}
