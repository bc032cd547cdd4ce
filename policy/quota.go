package policy

import (
	"net/netip"
	"slices"
	"time"
)

// Quota caps how many requests one API user may have allowed per calendar
// period, in UTC: at most Requests per day or per month. Zero Requests is
// no quota. Unlike a rate limit, which smooths bursts, a quota is a budget:
// once spent, the user is refused until the period resets.
type Quota struct {
	Requests int64
	Period   QuotaPeriod
}

// QuotaPeriod is the calendar period a quota counts over.
type QuotaPeriod uint8

// The quota periods.
const (
	NoQuotaPeriod QuotaPeriod = iota
	QuotaDay                  // from 00:00 UTC to the next
	QuotaMonth                // from the 1st, 00:00 UTC, to the next month's
)

// ParseQuotaPeriod reads "day" or "month".
func ParseQuotaPeriod(s string) (QuotaPeriod, bool) {
	switch s {
	case "day":
		return QuotaDay, true
	case "month":
		return QuotaMonth, true
	}
	return NoQuotaPeriod, false
}

// String is "day", "month", or "" for no period.
func (p QuotaPeriod) String() string {
	switch p {
	case QuotaDay:
		return "day"
	case QuotaMonth:
		return "month"
	}
	return ""
}

// Window is the period of q that holds now: its start and its end (the
// next period's start), in UTC. A quota without a period has no window;
// both are zero.
func (q Quota) Window(now time.Time) (start, end time.Time) {
	now = now.UTC()
	switch q.Period {
	case QuotaDay:
		start = time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 0, 1)
	case QuotaMonth:
		start = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0)
	}
	return time.Time{}, time.Time{}
}

// IPAllowed reports whether a request from addr may use the user: always
// when the user has no allowed_ips, otherwise only when one of its
// prefixes holds addr. An invalid addr (the client address could not be
// read) is never allowed by a list: the check fails closed. IPv4 addresses
// mapped into IPv6 are compared as IPv4.
func (u *APIUser) IPAllowed(addr netip.Addr) bool {
	if len(u.AllowedIPs) == 0 {
		return true
	}
	addr = addr.Unmap()
	return addr.IsValid() && slices.ContainsFunc(u.AllowedIPs, func(p netip.Prefix) bool { return p.Contains(addr) })
}
