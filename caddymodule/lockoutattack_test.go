package caddymodule

import (
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
)

// TestLockoutUnderAttack fills the lockout from 200,000 IPv4 addresses and
// from one IPv6 /64 (each request a wrong token from another address,
// named by X-Forwarded-For behind trusted_proxies), while a client with a
// valid token keeps sending requests, and while a guesser keeps guessing
// from one address. It checks that the guesser and the /64 stay locked,
// that the table stays within its bound, and reports the valid client's
// latency before and under attack, side by side. It takes a minute or
// more, so it runs only when asked: scripts/lockout-attack.sh, or
// APIUSERS_LOCKOUT_ATTACK=200000 go test -run TestLockoutUnderAttack -v ./caddymodule.
func TestLockoutUnderAttack(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("APIUSERS_LOCKOUT_ATTACK"))
	if n <= 0 {
		t.Skip("set APIUSERS_LOCKOUT_ATTACK to the number of attacking IPv4 addresses, such as 200000 (scripts/lockout-attack.sh)")
	}
	// A second site without the lockout takes the same flood as a
	// control: what the flood costs the valid client there is the load
	// itself, on a machine with few cores, not the lockout.
	controlPort := freePort(t)
	g := startGateway(t, gatewayOptions{
		gatewayBlock: "lockout 10 30m", // outlasts both floods
		globalExtra:  "\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}",
		extraSites:   fmt.Sprintf("http://127.0.0.1:%d {\n\tapi_users {\n\t\tlockout off\n\t}\n\treverse_proxy {UPSTREAM}\n}\n", controlPort),
	})
	controlURL := fmt.Sprintf("http://127.0.0.1:%d", controlPort)
	_, valid := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list")})
	bad, _ := policy.NewToken()
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	sendTo := func(base, token, from string) int {
		req, _ := http.NewRequest("GET", base+"/v1/products/1337/devices", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Forwarded-For", from)
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("request from %s: %v", from, err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	send := func(token, from string) int { return sendTo(g.url, token, from) }
	// measure sends valid requests from one client for d and returns
	// their latencies.
	measure := func(d time.Duration) []time.Duration {
		var lat []time.Duration
		for end := time.Now().Add(d); time.Now().Before(end); {
			start := time.Now()
			if s := send(valid.Token, "198.51.100.7"); s != 200 {
				t.Fatalf("valid request: status %d", s)
			}
			lat = append(lat, time.Since(start))
		}
		return lat
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	measure(time.Second) // warm up
	heapBefore := heap()
	before := measure(5 * time.Second)

	// flood sends one wrong token from each of n IPv4 addresses and n/4
	// addresses of one /64 to base, from 4 connections, while the valid
	// client is measured; it returns the valid client's latencies, how
	// many wrong tokens were sent and refused with 429, and how long it
	// took.
	flood := func(base string) (lat []time.Duration, sent, locked int64, took time.Duration) {
		var nsent, n429 atomic.Int64
		var wg sync.WaitGroup
		work := make(chan string, 1024)
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for from := range work {
					if sendTo(base, bad, from) == 429 {
						n429.Add(1)
					}
					nsent.Add(1)
				}
			}()
		}
		start := time.Now()
		measured := make(chan []time.Duration)
		go func() {
			time.Sleep(2 * time.Second)
			measured <- measure(5 * time.Second)
		}()
		for i := 0; i < n; i++ {
			if i%4 == 3 {
				work <- fmt.Sprintf("2001:db8:77:88:%x:%x::1", i>>16, i&0xffff)
			}
			work <- fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff)
		}
		lat = <-measured
		close(work)
		wg.Wait()
		return lat, nsent.Load(), n429.Load(), time.Since(start)
	}

	// A guesser keeps guessing from one address all along.
	guesserLocked := atomic.Bool{}
	stop := make(chan struct{})
	guesserDone := make(chan struct{})
	go func() {
		defer close(guesserDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if send(bad, "203.0.113.66") == 429 {
				guesserLocked.Store(true)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	under, sent, refused429, attack := flood(g.url)
	close(stop)
	<-guesserDone
	heapAfter := heap()
	size := g.app.limits.lockout.size()
	if !guesserLocked.Load() {
		t.Error("the guesser was never locked out")
	}
	if s := send(bad, "203.0.113.66"); s != 429 {
		t.Errorf("after the attack, the guesser got %d, want 429", s)
	}
	if s := send(bad, "2001:db8:77:88:dead:beef::1"); s != 429 {
		t.Errorf("after the attack, a new address of the attacking /64 got %d, want 429", s)
	}
	control, _, _, _ := flood(controlURL)

	pct := func(lat []time.Duration, p int) time.Duration {
		s := slices.Clone(lat)
		slices.Sort(s)
		return s[len(s)*p/100]
	}
	t.Logf("attack: %d wrong tokens in %v (%.0f/s), %d of them refused with 429 (the /64)", sent, attack.Round(time.Millisecond), float64(sent)/attack.Seconds(), refused429)
	t.Logf("valid client before the attack:                  p50 %v, p99 %v (%d requests)", pct(before, 50), pct(before, 99), len(before))
	t.Logf("valid client under attack, lockout on:           p50 %v, p99 %v (%d requests)", pct(under, 50), pct(under, 99), len(under))
	t.Logf("valid client, same flood to a site without lockout: p50 %v, p99 %v (%d requests)", pct(control, 50), pct(control, 99), len(control))
	t.Logf("lockout table after the attack: %d clients (bound %d); heap in use %d MiB before, %d MiB after", size, defaultLockoutClients, heapBefore>>20, heapAfter>>20)

	if size > defaultLockoutClients {
		t.Errorf("the lockout table holds %d clients, over its bound %d", size, defaultLockoutClients)
	}
	if refused429 < int64(n/4)-20 {
		t.Errorf("only %d of the /64's %d wrong tokens were refused with 429", refused429, n/4)
	}
}
