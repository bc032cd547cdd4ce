package caddymodule

import (
	"bytes"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
)

// caddyfileSeeds are bodies of the api_users global option block and of
// the api_users and api_users_admin directive blocks: valid ones, and the
// mistakes an operator makes.
var caddyfileSeeds = append(validGlobalSeeds,
	"",
	"proxied_user_header X-On-Behalf-Of\nlockout 10 5m\npass_through",
	"lockout off",
	"actor {http.request.header.Remote-User}",
	"{\n\tstore sqlite\n}",

	// Duplicate names, overlapping templates.
	"endpoint a GET /v1/a devices:list\nendpoint a GET /v1/b devices:list",
	"endpoint a GET /v1/{x} devices:list\nendpoint b GET /v1/devices devices:list",
	"endpoint a GET,PUT /v1/{x}/{y...} devices:list\nendpoint b PUT /v1/a/b devices:update",
	"role reader devices:list\nrole reader devices:get",
	"org acme {\n\tproduct 1 p\n\tproduct 2 p\n}",
	"org acme {\n\tproduct 1 p\n}\norg acme",
	"org acme {\n\tproduct 1 p\n}\norg globex {\n\tproduct 1 q\n}",

	// Bad scopes, templates, methods and names.
	"endpoint list GET /v1/devices Devices:List",
	"endpoint list GET /v1/devices devices",
	"endpoint list GET /v1/devices devices:",
	"endpoint list GET /v1/{dev ice} devices:list",
	"endpoint list get /v1/devices devices:list",
	"endpoint list GET, /v1/devices devices:list",
	"endpoint list GET v1/devices devices:list",
	"endpoint list GET /v1/../admin devices:list",
	"endpoint list GET /v1/{x...}/y devices:list",
	"endpoint list GET /v1/devices",
	"role reader devices",
	"role Reader devices:list",
	"proxied_user_header X:Proxied",
	"proxied_user_header Authorization",
	"proxied_user_header x_api_user",
	"pass_through now",
	"lockout_ipv6_prefix 64",
	"lockout_ipv6_prefix /48",
	"lockout_ipv6_prefix 0",
	"actor",
	"actor a b",

	// Unterminated and stray braces.
	"org acme {\n\tproduct 1337 p",
	"cache {",
	"cache {\n\tmax_users 10\n",
	"{",
	"}",
	"}\n}\n{",
	"org acme { product 1 p }",
	"cache }",

	// Huge numbers.
	"cache {\n\tmax_users 99999999999999999999999\n}",
	"cache {\n\tmax_users 9223372036854775807\n}",
	"org acme {\n\tproduct 9223372036854775807 p\n}",
	"org acme {\n\tproduct 9223372036854775808 p\n}",
	"lockout 99999999999999999999 5m",
	"lockout 10 9999999999999999h",
	"sync_interval 2562047h",
	"max_stale 99999999999999999999s",
	"change_retention 1e9h",

	// Negative and zero durations, and max_stale below two sync intervals.
	"max_stale -5s",
	"cache {\n\tttl -1m\n}",
	"cache {\n\tnegative_ttl 0s\n}",
	"lockout 10 -5m",
	"lockout -1 5m",
	"lockout 0 5m",
	"sync_interval 1s\nmax_stale 1s",
	"max_stale 600ms",

	// Placeholders where names and values go.
	"store sqlite {$HOME}/api_users.db",
	"store sqlite {file.secrets/db_path}",
	"endpoint {x} GET /v1/{x} {scope}",
	"org {env.ORG} {\n\tproduct {env.ID} {env.SLUG}\n}",
	"role {env.ROLE} devices:list",
	"proxied_user_header {http.request.header.X}",
	"lockout {env.N} {env.WINDOW}",
	"sync_interval {env.SYNC}",
)

// validGlobalSeeds are valid bodies of the api_users global option.
var validGlobalSeeds = []string{
	testCatalog,
	"store sqlite\nsync_interval 500ms\nmax_stale 5s\nlast_used_interval 1m\nchange_retention 168h",
	"store sqlite data/api_users.db\ncache {\n\tmax_users 100000\n\tttl 5m\n\tnegative_ttl 30s\n}",
	"store postgres {env.DATABASE_URL}",
	`store postgres "host=db user=caddy dbname=api_users"`,
	"store postgres <<EOF\nhost=db user=caddy\nEOF",
	"org acme acme-inc {\n\tproduct 1337 my-product-v1\n}\norg globex",
	"role device-reader devices:list devices:get\nrole device_operator devices.function:call",
}

// exampleAPIUsersBlock returns the body of Caddyfile.example's api_users
// global option block.
func exampleAPIUsersBlock(f *testing.F) string {
	f.Helper()
	b, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		f.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != "api_users {" {
			continue
		}
		depth := 1
		for j := i + 1; j < len(lines); j++ {
			depth += strings.Count(lines[j], "{") - strings.Count(lines[j], "}")
			if depth == 0 {
				return strings.Join(lines[i+1:j], "\n")
			}
		}
	}
	f.Fatal("Caddyfile.example has no api_users block")
	return ""
}

// errLine finds the position a Caddyfile error names.
var errLine = regexp.MustCompile(`, at Caddyfile:(\d+)$`)

// checkParseError: a refused block says what is wrong and on which line.
func checkParseError(t *testing.T, what, text string, err error) {
	t.Helper()
	msg := err.Error()
	m := errLine.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("%s: error names no line: %q\ninput:\n%s", what, msg, text)
	}
	line, _ := strconv.Atoi(m[1])
	if line < 1 || line > strings.Count(text, "\n")+1 {
		t.Fatalf("%s: error names line %d of a %d-line input: %q\ninput:\n%s", what, line, strings.Count(text, "\n")+1, msg, text)
	}
	if strings.TrimSpace(strings.TrimSuffix(msg, m[0])) == "" {
		t.Fatalf("%s: error has no message: %q", what, msg)
	}
}

// checkRoundTrip: the JSON a block produced decodes strictly into the
// module's type and encodes back to itself, so Caddy loads what the
// adapter wrote.
func checkRoundTrip[T any](t *testing.T, what string, raw []byte, into *T) {
	t.Helper()
	if len(raw) == 0 {
		t.Fatalf("%s: accepted, but produced no JSON", what)
	}
	if err := caddy.StrictUnmarshalJSON(raw, into); err != nil {
		t.Fatalf("%s: its JSON does not decode: %v\n%s", what, err, raw)
	}
	if again := caddyconfig.JSON(into, nil); !bytes.Equal(again, raw) {
		t.Fatalf("%s: JSON does not survive a round trip:\n%s\n%s", what, raw, again)
	}
}

// FuzzCaddyfile feeds arbitrary text to the parsers of the api_users global
// option and of the api_users and api_users_admin directives, as the body
// of their block and as the rest of their first line. Whatever the text, a
// parser does not panic; it refuses with an error that names a line of the
// text, or returns config that Caddy can load: the app's config passes the
// checks the app makes when it starts (short of opening the store), and
// the handlers' pass the checks their Provision makes. Each iteration only
// lexes and parses: no Caddy starts, no file or environment variable is
// read, no store is opened.
func FuzzCaddyfile(f *testing.F) {
	f.Add(exampleAPIUsersBlock(f))
	for _, s := range caddyfileSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, name := range []string{"api_users", "api_users_admin"} {
			for _, text := range []string{name + " {\n" + body + "\n}", name + " " + body} {
				tokens, err := caddyfile.Tokenize([]byte(text), "Caddyfile")
				if err != nil {
					continue // refused by Caddy's lexer, before any of our code
				}
				if name == "api_users" {
					fuzzGlobalOption(t, text, tokens)
					fuzzGatewayDirective(t, text, tokens)
				} else {
					fuzzAdminDirective(t, text, tokens)
				}
			}
		}
	})
}

// errStoreNotOpened is how App.open refuses the store config the fuzzer
// puts in place of the parsed one: after every check of the config, and
// before it opens anything.
const errStoreNotOpened = "the sqlite store takes a path, not a url"

func fuzzGlobalOption(t *testing.T, text string, tokens []caddyfile.Token) {
	v, err := parseGlobalOption(caddyfile.NewDispenser(tokens), nil)
	if err != nil {
		checkParseError(t, "api_users global option", text, err)
		return
	}
	opt, ok := v.(httpcaddyfile.App)
	if !ok || opt.Name != "api_users" {
		t.Fatalf("the global option produced %#v", v)
	}
	var app App
	checkRoundTrip(t, "api_users global option", opt.Value, &app)

	// The parser checks each value as it reads it, so the catalog, orgs,
	// products and roles it accepts are ones the app accepts.
	if err := app.validateConfig(); err != nil {
		t.Fatalf("accepted, but the app refuses it: %v\ninput:\n%s", err, text)
	}
	// Then the checks App.open makes before it opens the store, with a
	// store config it refuses, so nothing is opened and no placeholder in
	// the parsed connection string or path is replaced.
	app.Store = StoreConfig{Driver: "sqlite", URL: "not opened"}
	err = app.open(t.Context())
	switch {
	case err == nil:
		t.Fatalf("App.open accepted a store config it must refuse")
	case strings.Contains(err.Error(), errStoreNotOpened):
	case strings.Contains(err.Error(), "max_stale") && app.MaxStale < 2*app.SyncInterval:
		// The one relation the parser leaves to App.open: it depends on
		// defaults when only one of the two is set.
	default:
		t.Fatalf("accepted, but the app refuses it at start: %v\ninput:\n%s", err, text)
	}
}

func fuzzGatewayDirective(t *testing.T, text string, tokens []caddyfile.Token) {
	h, err := parseGatewayDirective(httpcaddyfile.Helper{Dispenser: caddyfile.NewDispenser(tokens)})
	if err != nil {
		checkParseError(t, "api_users directive", text, err)
		return
	}
	g, ok := h.(*Gateway)
	if !ok {
		t.Fatalf("the directive produced %T", h)
	}
	var back Gateway
	checkRoundTrip(t, "api_users directive", caddyconfig.JSON(g, nil), &back)
	// What Provision checks.
	if err := checkProxiedUserHeader(back.ProxiedUserHeader); err != nil {
		t.Fatalf("accepted, but Provision refuses it: %v\ninput:\n%s", err, text)
	}
	if back.LockoutThreshold > 0 && back.LockoutWindow < 0 {
		t.Fatalf("accepted a negative lockout window %s\ninput:\n%s", time.Duration(back.LockoutWindow), text)
	}
	if back.LockoutThreshold < 0 && back.LockoutThreshold != -1 {
		t.Fatalf("lockout threshold %d\ninput:\n%s", back.LockoutThreshold, text)
	}
}

func fuzzAdminDirective(t *testing.T, text string, tokens []caddyfile.Token) {
	h, err := parseAdminDirective(httpcaddyfile.Helper{Dispenser: caddyfile.NewDispenser(tokens)})
	if err != nil {
		checkParseError(t, "api_users_admin directive", text, err)
		return
	}
	a, ok := h.(*Admin)
	if !ok {
		t.Fatalf("the directive produced %T", h)
	}
	var back Admin
	checkRoundTrip(t, "api_users_admin directive", caddyconfig.JSON(a, nil), &back)
}

// TestCaddyfileSeedsMeanWhatTheySay keeps the fuzzer's seeds honest: the
// valid ones parse, and the known mistakes are refused.
func TestCaddyfileSeedsMeanWhatTheySay(t *testing.T) {
	parse := func(body string) error {
		text := "api_users {\n" + body + "\n}"
		tokens, err := caddyfile.Tokenize([]byte(text), "Caddyfile")
		if err != nil {
			return err
		}
		_, err = parseGlobalOption(caddyfile.NewDispenser(tokens), nil)
		return err
	}
	for _, body := range validGlobalSeeds {
		if err := parse(body); err != nil {
			t.Errorf("valid seed refused: %v\n%s", err, body)
		}
	}
	for _, body := range []string{
		"endpoint a GET /v1/a devices:list\nendpoint a GET /v1/b devices:list",
		"endpoint a GET /v1/{x} devices:list\nendpoint b GET /v1/devices devices:list",
		"endpoint list GET /v1/devices Devices:List",
		"cache {\n\tmax_users 99999999999999999999999\n}",
		"org acme {\n\tproduct 9223372036854775808 p\n}",
		"max_stale -5s",
		"cache {\n\tttl -1m\n}",
	} {
		err := parse(body)
		if err == nil {
			t.Errorf("known mistake accepted:\n%s", body)
			continue
		}
		if !errLine.MatchString(err.Error()) {
			t.Errorf("error names no line: %v", err)
		}
	}
}
