package policy

import (
	"testing"
	"time"
)

func TestRateLimitAdmit(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := RateLimit{Requests: 3, Window: time.Minute} // one every 20 s, bursts of 3
	var tat time.Time
	admit := func(at time.Duration) (time.Duration, bool) {
		var retry time.Duration
		var ok bool
		tat, retry, ok = l.Admit(tat, t0.Add(at))
		return retry, ok
	}
	for i := 0; i < 3; i++ {
		if _, ok := admit(0); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	retry, ok := admit(0)
	if ok || retry != 20*time.Second {
		t.Fatalf("4th request at once: ok=%v retry=%v, want refused, retry 20s", ok, retry)
	}
	// A refused request uses up nothing: still 20 s, 10 s later 10 s.
	if retry, ok := admit(10 * time.Second); ok || retry != 10*time.Second {
		t.Fatalf("at 10s: ok=%v retry=%v, want refused, retry 10s", ok, retry)
	}
	if _, ok := admit(20 * time.Second); !ok {
		t.Fatal("at 20s one request is due, refused")
	}
	if _, ok := admit(20 * time.Second); ok {
		t.Fatal("at 20s a second request admitted")
	}
	// After a quiet full window the whole burst is back, and no more.
	n := 0
	for {
		if _, ok := admit(2 * time.Minute); !ok {
			break
		}
		n++
	}
	if n != 3 {
		t.Fatalf("after a quiet window %d requests admitted at once, want 3", n)
	}
	// Sustained: over 10 minutes of one request a second, 3 + 30 admitted.
	tat = time.Time{}
	admitted := 0
	for s := 0; s < 600; s++ {
		if _, ok := admit(10*time.Minute + time.Duration(s)*time.Second); ok {
			admitted++
		}
	}
	if admitted != 3+29 && admitted != 3+30 {
		t.Fatalf("sustained: %d admitted in 10 min, want about 33", admitted)
	}
}

func TestRateLimitZeroAdmitsAll(t *testing.T) {
	var l RateLimit
	now := time.Now()
	for i := 0; i < 100; i++ {
		if _, _, ok := l.Admit(time.Time{}, now); !ok {
			t.Fatal("the zero RateLimit refused a request")
		}
	}
}

func TestRateLimitAdmitDoesNotAllocate(t *testing.T) {
	l := RateLimit{Requests: 100, Window: time.Second}
	var tat time.Time
	now := time.Now()
	if n := testing.AllocsPerRun(100, func() { tat, _, _ = l.Admit(tat, now) }); n != 0 {
		t.Fatalf("Admit allocates %v times", n)
	}
}
