package policy

import "time"

// RateLimit allows Requests requests per Window to one API user, with
// bursts of up to Requests at once. It is enforced by the generic cell rate
// algorithm (GCRA): one timestamp per user, no timers, no counters to reset.
type RateLimit struct {
	Requests int
	Window   time.Duration
}

// Interval is the time one request uses up of the window.
func (l RateLimit) Interval() time.Duration {
	if l.Requests <= 0 {
		return 0
	}
	return l.Window / time.Duration(l.Requests)
}

// Admit decides one request at now for a user whose theoretical arrival
// time is tat (zero for a user not seen yet). It returns the new tat to
// keep, and, for a refused request, how long until one would be admitted.
// A refused request does not use up any of the limit. Admit does not
// allocate; the caller keeps tat per user and serialises calls for one user.
func (l RateLimit) Admit(tat, now time.Time) (newTAT time.Time, retryAfter time.Duration, ok bool) {
	interval := l.Interval()
	if interval <= 0 {
		return tat, 0, true
	}
	if tat.Before(now) {
		tat = now
	}
	// The user may be up to Window - interval ahead of now: that is the
	// burst of Requests.
	if ahead := tat.Sub(now); ahead > l.Window-interval {
		return tat, ahead - (l.Window - interval), false
	}
	return tat.Add(interval), 0, true
}
