package caddymodule

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testAdmin is a real Caddy, loaded in this process from a Caddyfile, with
// the gateway in front of a recording upstream (as startGateway makes it)
// and the management API on another loopback port, both sharing one
// api_users app. The audit logger writes to a file the test can read.
type testAdmin struct {
	*testGateway
	adminURL  string
	auditPath string
}

type adminOptions struct {
	gatewayOptions
	// gatewaySite replaces the body of the gateway's site block.
	gatewaySite string
	// adminSite is more directives in the management site, before
	// api_users_admin (basic_auth, say).
	adminSite string
	// adminBlock is lines inside the api_users_admin block.
	adminBlock string
}

func startAdmin(t *testing.T, opts adminOptions) *testAdmin {
	t.Helper()
	up := newRecordingUpstream(t)
	port, adminPort := freePort(t), freePort(t)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "api_users.db")
	auditPath := filepath.Join(dir, "audit.log")
	gatewaySite := opts.gatewaySite
	if gatewaySite == "" {
		gatewaySite = fmt.Sprintf("\tapi_users {\n%s\n\t}\n%s\n\treverse_proxy %s\n", opts.gatewayBlock, opts.siteExtra, up.addr())
	}
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	log audit {
		output file %s
		format json
		include http.handlers.api_users.audit
	}
	api_users {
		store sqlite %s
		sync_interval 50ms
%s
%s
	}
}

http://127.0.0.1:%d {
%s
}

http://127.0.0.1:%d {
	bind 127.0.0.1
%s
	api_users_admin {
%s
	}
}
`, auditPath, dbPath, testCatalog, opts.appExtra, port, gatewaySite, adminPort, opts.adminSite, opts.adminBlock)
	_, app := loadCaddyfile(t, caddyfile)
	g := &testGateway{
		t:        t,
		url:      fmt.Sprintf("http://127.0.0.1:%d", port),
		upstream: up,
		app:      app,
		dbPath:   dbPath,
		client:   &http.Client{Timeout: 10 * time.Second},
	}
	g.waitUp()
	return &testAdmin{testGateway: g, adminURL: fmt.Sprintf("http://127.0.0.1:%d", adminPort), auditPath: auditPath}
}

// adminResult is a management API response.
type adminResult struct {
	Status int
	Header http.Header
	Body   []byte
	Error  errorBody
}

// call sends a management request. body is sent as is when it is a string
// or []byte, as JSON otherwise, and not at all when nil.
func (a *testAdmin) call(method, path string, body any, header ...http.Header) adminResult {
	a.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			a.t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, a.adminURL+path, r)
	if err != nil {
		a.t.Fatal(err)
	}
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range header {
		for k, vs := range h {
			req.Header[k] = vs
		}
	}
	resp, err := a.client.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	res := adminResult{Status: resp.StatusCode, Header: resp.Header, Body: data}
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(data, &res.Error); err != nil {
			a.t.Fatalf("%s %s: error body is not JSON: %q", method, path, data)
		}
	}
	return res
}

// must sends a management request that must succeed, and decodes its body
// into out (when not nil).
func (a *testAdmin) must(method, path string, body any, out any) {
	a.t.Helper()
	r := a.call(method, path, body)
	if r.Status != http.StatusOK {
		a.t.Fatalf("%s %s: status %d, body %s", method, path, r.Status, r.Body)
	}
	var ok struct {
		OK bool `json:"ok"`
	}
	if err := json.Unmarshal(r.Body, &ok); err != nil || !ok.OK {
		a.t.Fatalf("%s %s: body is not {\"ok\": true, ...}: %s", method, path, r.Body)
	}
	if out != nil {
		if err := json.Unmarshal(r.Body, out); err != nil {
			a.t.Fatalf("%s %s: decoding %s: %v", method, path, r.Body, err)
		}
	}
}

// createdResponse is the body of a create.
type createdResponse struct {
	Created struct {
		UserView
		Tokens []TokenView `json:"tokens"`
		Secret string      `json:"secret"`
		Keys   []IssuedKey `json:"keys"`
	} `json:"created"`
}

// createVia creates a user through the management API at prefix (such as
// /v1/orgs/acme) and returns the create response.
func (a *testAdmin) createVia(prefix string, spec map[string]any) createdResponse {
	a.t.Helper()
	var c createdResponse
	a.must("POST", prefix+"/team", spec, &c)
	if c.Created.Username == "" || len(c.Created.Tokens) != 1 || c.Created.Secret == "" || len(c.Created.Keys) != 1 {
		a.t.Fatalf("create response lacks credentials: %+v", c)
	}
	return c
}

// updatedResponse is the body of an update.
type updatedResponse struct {
	TokenReplaced bool        `json:"token_replaced"`
	User          UpdatedView `json:"user"`
}

// auditRecords returns the management records of the audit log so far.
func (a *testAdmin) auditRecords() []map[string]any {
	a.t.Helper()
	f, err := os.Open(a.auditPath)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		a.t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			a.t.Fatalf("audit line is not JSON: %q", sc.Text())
		}
		if rec["msg"] == "management change" {
			out = append(out, rec)
		}
	}
	return out
}

// gatewayStatus sends GET path to the gateway with header and returns the
// status and error code.
func (a *testAdmin) gatewayStatus(path string, header http.Header) (int, string) {
	a.t.Helper()
	r := a.do("GET", path, header)
	a.upstream.take()
	return r.Status, r.Error.Error
}
