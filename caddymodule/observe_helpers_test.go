package caddymodule

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// rawUpstream is a backend that records each request exactly as it came
// off the wire (request line, header, body and trailers), for proofs that
// hold whatever a backend's HTTP library would make of the bytes. It
// answers every request with 200 and closes the connection, so each
// connection carries one request and its bytes are that request's alone.
type rawUpstream struct {
	ln   net.Listener
	mu   sync.Mutex
	reqs []rawRecorded
}

type rawRecorded struct {
	Raw     []byte      // every byte the gateway sent
	Header  http.Header // as Go's server would parse them
	Trailer http.Header
}

func newRawUpstream(t *testing.T) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(conn)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return u
}

func (u *rawUpstream) serve(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(conn, &raw))
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, req.Body) // reads the trailers too
	u.mu.Lock()
	u.reqs = append(u.reqs, rawRecorded{Raw: bytes.Clone(raw.Bytes()), Header: req.Header, Trailer: req.Trailer})
	u.mu.Unlock()
	_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nConnection: close\r\n\r\nupstream ok")
}

func (u *rawUpstream) addr() string { return u.ln.Addr().String() }

// take returns and clears what the upstream received, waiting briefly for
// want requests, since the upstream records after the response may have
// reached the client.
func (u *rawUpstream) take(want int) []rawRecorded {
	within(2*time.Second, func() bool {
		u.mu.Lock()
		defer u.mu.Unlock()
		return len(u.reqs) >= want
	})
	u.mu.Lock()
	defer u.mu.Unlock()
	r := u.reqs
	u.reqs = nil
	return r
}

// headerLines returns the header and trailer field lines of a raw HTTP/1.1
// request, as name and value pairs in wire order: everything after the
// request line that is not the body. It understands the two framings the
// proxy uses, Content-Length and chunked.
func headerLines(t *testing.T, raw []byte) [][2]string {
	t.Helper()
	head, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("no end of header in %q", raw)
	}
	lines := strings.Split(string(head), "\r\n")[1:]
	chunked := false
	for _, l := range lines {
		name, value, _ := strings.Cut(l, ":")
		if strings.EqualFold(name, "Transfer-Encoding") && strings.Contains(strings.ToLower(value), "chunked") {
			chunked = true
		}
	}
	if chunked {
		// Skip the chunks; what follows the last one is the trailer.
		r := bufio.NewReader(bytes.NewReader(body))
		for {
			sizeLine, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("bad chunked body in %q", raw)
			}
			sizeHex, _, _ := strings.Cut(strings.TrimSpace(sizeLine), ";")
			size, err := strconv.ParseInt(sizeHex, 16, 64)
			if err != nil {
				t.Fatalf("bad chunk size %q", sizeLine)
			}
			if size == 0 {
				break
			}
			if _, err := io.CopyN(io.Discard, r, size+2); err != nil {
				t.Fatalf("short chunk in %q", raw)
			}
		}
		rest, _ := io.ReadAll(r)
		for _, l := range strings.Split(string(rest), "\r\n") {
			if l != "" {
				lines = append(lines, l)
			}
		}
	}
	out := make([][2]string, 0, len(lines))
	for _, l := range lines {
		name, value, _ := strings.Cut(l, ":")
		out = append(out, [2]string{name, strings.TrimSpace(value)})
	}
	return out
}

// readJSONLines parses a log file of one JSON object per line.
func readJSONLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	flushAudit()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, line)
		}
		out = append(out, m)
	}
	return out
}

// flushAudit waits until the running api_users app has written every
// gateway record queued so far: records are written in batches, off the
// request path, and tests read them right after the requests.
func flushAudit() {
	if app, err := caddy.ActiveContext().AppIfConfigured("api_users"); err == nil {
		if q := app.(*App).auditQ.Load(); q != nil {
			q.flush()
		}
	}
}

// waitForLines polls a JSON log file until match accepts at least want
// entries, and returns the accepted ones. Caddy writes an access log entry
// after the response, so a client may see the response first.
func waitForLines(t *testing.T, path string, want int, match func(map[string]any) bool) []map[string]any {
	t.Helper()
	var got []map[string]any
	within(5*time.Second, func() bool {
		got = nil
		for _, m := range readJSONLines(t, path) {
			if match(m) {
				got = append(got, m)
			}
		}
		return len(got) >= want
	})
	return got
}

// auditLog is the Caddyfile global option that sends the audit logger,
// and only it, to file as JSON.
func auditLog(file string) string {
	return `	log audit {
		output file ` + file + `
		format json
		include http.handlers.api_users.audit
	}`
}

// auditFields are the fields every gateway decision record carries.
var auditFields = []string{"decision", "reason", "status", "actor", "api_user", "org", "product", "proxied_user", "credential_id", "method", "path", "endpoint", "scope", "client_ip"}
