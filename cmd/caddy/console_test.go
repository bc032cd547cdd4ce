package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The console's tests drive Debian's chromium through the real binary
// running Caddyfile.example, as an operator would use it. Without a
// Chromium they are skipped, unless CI=true, where .ci/run installs one and
// a missing browser fails them. Screenshots of every screen at 1280 and
// 390 pixels wide are written to $CONSOLE_SCREENSHOTS (default: a
// directory under the system's temporary directory, logged), to be looked
// at, not compared.

// findChromium returns the browser to drive, or skips (fails under CI).
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Chromium found (install Debian's chromium package, or set CHROMIUM): with CI=true the console's browser tests must run")
	}
	t.Skip("no Chromium found: install Debian's chromium package (or set CHROMIUM) to run the console's browser tests")
	return ""
}

// example is Caddyfile.example running in the real binary, on free ports.
type example struct {
	gateway, admin string
	log            *syncBuffer
	dataDir        string // the server's XDG_DATA_HOME: its SQLite store is caddy/api_users/api_users.db in it
}

func startExample(t *testing.T) *example {
	t.Helper()
	bin := buildCaddy(t)
	dir := t.TempDir()
	raw, err := os.ReadFile("../../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	gw, up, adm := freePort(t), freePort(t), freePort(t)
	cfg := string(raw)
	for _, r := range [][2]string{{":8080", fmt.Sprintf(":%d", gw)}, {":9000", fmt.Sprintf(":%d", up)}, {":8081", fmt.Sprintf(":%d", adm)}} {
		cfg = strings.ReplaceAll(cfg, r[0], r[1])
	}
	cfg = strings.Replace(cfg, "{\n", "{\n\tadmin off\n", 1)
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	log := &syncBuffer{}
	server := exec.Command(bin, "run", "--config", cfgPath)
	server.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HOME="+dir)
	server.Stdout, server.Stderr = log, log
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = server.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- server.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = server.Process.Kill()
		}
		if t.Failed() {
			t.Logf("server log:\n%s", log.String())
		}
	})
	e := &example{gateway: fmt.Sprintf("http://127.0.0.1:%d", gw), admin: fmt.Sprintf("http://127.0.0.1:%d", adm), log: log, dataDir: filepath.Join(dir, "data")}
	waitFor(t, e.gateway)
	waitFor(t, e.admin)
	return e
}

// api calls the management API as curl would, and decodes the body.
func (e *example) api(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		r = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, e.admin+path, r)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// gatewayGet sends GET path to the gateway with the Authorization header
// value auth and returns the status and the error code.
func (e *example) gatewayGet(t *testing.T, path, auth string, extra ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", e.gateway+path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Error
}

// browser is one Chromium with a tab on the console.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := findChromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-gpu", true))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	shots := os.Getenv("CONSOLE_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join(os.TempDir(), "api-users-console-screenshots")
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	// The first action starts the browser, tied to the context it runs
	// with: run it on the tab's own context, not on one with a timeout.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return &browser{t: t, ctx: ctx, shots: shots}
}

// tab opens another tab of the same browser.
func (b *browser) tab() *browser {
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		b.t.Fatalf("opening a tab: %v", err)
	}
	return &browser{t: b.t, ctx: ctx, shots: b.shots}
}

func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// eval runs JavaScript in the page and returns its result as a string.
func (b *browser) eval(js string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

func (b *browser) value(css string) string {
	b.t.Helper()
	b.do(chromedp.WaitVisible(chromedp.CSS(css)))
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS(css)))
	if err != nil {
		b.t.Fatalf("reading %s: %v", css, err)
	}
	return v
}

// click clicks the element an XPath finds, once it is visible.
func (b *browser) click(xpath string) {
	b.t.Helper()
	b.do(chromedp.WaitVisible(xpath), chromedp.Click(xpath))
}

// waitText waits until the page's main text contains s.
func (b *browser) waitText(s string) {
	b.t.Helper()
	if !within(10*time.Second, func() bool { return strings.Contains(b.eval(`document.body.innerText`), s) }) {
		b.t.Fatalf("the page never showed %q; it shows:\n%s", s, b.eval(`document.body.innerText`))
	}
}

// shot saves a screenshot of the page at 1280 and 390 pixels wide.
func (b *browser) shot(name string) {
	b.t.Helper()
	for _, w := range []int64{1280, 390} {
		h := int64(900)
		if w == 390 {
			h = 844
		}
		b.do(chromedp.EmulateViewport(w, h), chromedp.Sleep(150*time.Millisecond))
		ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		cancel()
		if err != nil {
			b.t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(b.shots, fmt.Sprintf("%s-%d.png", name, w))
		if err := os.WriteFile(path, png, 0o644); err != nil {
			b.t.Fatal(err)
		}
		// The page must not scroll sideways at either width.
		if over := b.eval(`String(document.documentElement.scrollWidth - document.documentElement.clientWidth)`); over != "0" {
			b.t.Errorf("%s at %dpx: the page is %s px wider than the window", name, w, over)
		}
	}
	b.do(chromedp.EmulateViewport(1280, 900))
}

// open goes to a page of the console and waits until that page, not the
// one before it, is shown: the old heading is marked first, and the wait
// is for a heading without the mark.
func (b *browser) open(url string) {
	b.t.Helper()
	b.eval(`document.querySelector("main h1") && (document.querySelector("main h1").dataset.old = "1"); ""`)
	if b.eval(`location.href`) == url {
		b.do(chromedp.Reload()) // the same address: no hashchange to follow
	} else {
		b.do(chromedp.Navigate(url))
	}
	eventually(b.t, 10*time.Second, url+" shows its page", func() bool {
		return b.eval(`document.querySelector("main h1:not([data-old])") && !document.querySelector("main h1[data-old]") && document.querySelector("main h1").textContent !== "API users" ? "new" : ""`) == "new"
	})
}

// credential reads a value of the one-time dialog and closes it.
func (b *browser) credential(what string) string {
	b.t.Helper()
	v := b.value(`dialog.credentials input[data-credential=` + what + `]`)
	return v
}

func (b *browser) closeCredentials() {
	b.t.Helper()
	b.click(`//dialog//button[normalize-space()='I have stored it']`)
	b.do(chromedp.WaitNotPresent(chromedp.CSS("dialog.credentials")))
}

// TestConsoleInBrowser goes through the console's screens in Chromium,
// against Caddyfile.example in the real binary: create a product user and
// use its token at the gateway, rotate it, add and delete keys, retire,
// bring back and delete; show typed text as text; refuse a stale edit in a
// second tab; agree with the gateway in "try a request"; and let no other
// site change anything.
func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and drives a browser")
	}
	findChromium(t)
	e := startExample(t)
	b := newBrowser(t)
	b.do(chromedp.Navigate(e.admin + "/"))
	b.waitText("Orgs and products")
	b.shot("orgs")

	// Create a product user, read its credentials once, use the token.
	b.open(e.admin + "/#/product/1337/new")
	b.waitText("Add an API user to product 1337")
	b.do(
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), "console-bot"),
		chromedp.SendKeys(chromedp.CSS(`input[name=friendly_name]`), "Console bot"),
		chromedp.Click(chromedp.CSS(`input[value="devices:list"]`)),
		chromedp.Click(chromedp.CSS(`input[value="devices:get"]`)),
	)
	b.shot("create-form")
	b.click(`//button[normalize-space()='Create API user']`)
	token := b.credential("token")
	secret := b.credential("secret")
	firstKey := b.credential("key")
	if !strings.HasPrefix(token, "apiu_at_") || secret == "" || firstKey == "" {
		t.Fatalf("credentials dialog: token %q, secret set %v, key set %v", token, secret != "", firstKey != "")
	}
	b.waitText("You will not see this again")
	b.shot("credentials-dialog")
	// The dialog's curl lines work as they are, with GATEWAY set.
	curlLines := b.value(`dialog textarea[data-credential=curl]`)
	for _, line := range strings.Split(curlLines, "\n") {
		cmd := exec.Command("sh", "-c", line+" -s -f")
		cmd.Env = append(os.Environ(), "GATEWAY="+e.gateway)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"X-Api-User": "console-bot"`) {
			t.Errorf("the dialog's %q: %v\n%s", line, err, out)
		}
	}
	if strings.Contains(b.eval(`location.href`), token) {
		t.Error("the token is in the URL")
	}
	b.closeCredentials()
	b.waitText("Console bot (console-bot)")
	if got := b.eval(`JSON.stringify([localStorage.length, sessionStorage.length, document.cookie])`); got != `[0,0,""]` {
		t.Errorf("browser storage after creating a user: %s", got)
	}
	if got := b.eval(`document.body.innerText.includes(` + jsString(token) + `) ? "shown" : "gone"`); got != "gone" {
		t.Error("the token is still on the page after the dialog closed")
	}
	if st, code := e.gatewayGet(t, "/v1/products/1337/devices", "Bearer "+token); st != 200 {
		t.Fatalf("the console's new token at the gateway: %d %s, want 200", st, code)
	}
	b.shot("user")

	// Rotate: the old token is refused at once, the new one works.
	b.click(`//div[@class='actions']/button[normalize-space()='Rotate token']`)
	b.click(`//dialog//button[normalize-space()='Rotate token']`)
	newToken := b.credential("token")
	b.closeCredentials()
	if st, code := e.gatewayGet(t, "/v1/products/1337/devices", "Bearer "+token); st != 401 {
		t.Errorf("old token after rotation: %d %s, want 401", st, code)
	}
	if st, _ := e.gatewayGet(t, "/v1/products/1337/devices", "Bearer "+newToken); st != 200 {
		t.Errorf("new token after rotation: %d, want 200", st)
	}
	token = newToken

	// Add a key, delete the first one: the new key works, the old does not.
	basic := func(key string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte("console-bot:"+key+":"+secret))
	}
	b.waitText("Console bot (console-bot)")
	b.click(`//button[normalize-space()='Add key']`)
	secondKey := b.credential("key")
	b.closeCredentials()
	b.waitText("Keys")
	firstKeyID := strings.SplitN(strings.TrimPrefix(firstKey, "apiu_k_"), "_", 2)[0]
	b.click(fmt.Sprintf(`//button[@aria-label='Delete key %s']`, b.eval(`document.querySelector("table.list code").textContent`)))
	b.click(`//dialog//button[normalize-space()='Delete key']`)
	b.waitText("deleted.")
	if st, _ := e.gatewayGet(t, "/v1/products/1337/devices", basic(firstKey)); st != 401 {
		t.Errorf("deleted first key (%s): %d, want 401", firstKeyID, st)
	}
	if st, _ := e.gatewayGet(t, "/v1/products/1337/devices", basic(secondKey)); st != 200 {
		t.Errorf("added key: %d, want 200", st)
	}

	// Retire and bring back.
	b.click(`//div[@class='actions']/button[normalize-space()='Retire']`)
	b.waitText("console-bot is retired.")
	if st, code := e.gatewayGet(t, "/v1/products/1337/devices", "Bearer "+token); st != 401 || code != "user_retired" {
		t.Errorf("retired user's token: %d %s, want 401 user_retired", st, code)
	}
	b.click(`//div[@class='actions']/button[normalize-space()='Bring back']`)
	token = b.credential("token") // bringing back lengthens its life: a new token
	b.closeCredentials()
	b.waitText("console-bot is active again.")
	if st, code := e.gatewayGet(t, "/v1/products/1337/devices", "Bearer "+token); st != 200 {
		t.Errorf("token after bringing back: %d %s, want 200", st, code)
	}

	// Text a user typed is shown as typed, and never runs.
	const evil = `<img src=x onerror=alert(1)>`
	b.eval(`window.alert = () => { window.__xss = true }; ""`)
	b.open(e.admin + "/#/product/1337/users/console-bot/edit")
	b.do(chromedp.WaitVisible(chromedp.CSS(`input[name=friendly_name]`)), chromedp.SetValue(chromedp.CSS(`input[name=friendly_name]`), evil))
	b.eval(`window.alert = () => { window.__xss = true }; ""`)
	b.shot("edit-form")
	b.click(`//button[normalize-space()='Save changes']`)
	b.waitText(evil + " (console-bot)")
	if got := b.eval(`document.querySelector("h1").textContent`); got != evil+" (console-bot)" {
		t.Errorf("heading = %q, want the name as typed", got)
	}
	b.open(e.admin + "/#/product/1337")
	b.waitText(evil)
	if got := b.eval(`String(document.querySelectorAll("img").length) + " " + String(window.__xss === true)`); got != "0 false" {
		t.Errorf("images on the page and script run: %s, want 0 false", got)
	}
	b.shot("team")

	// The allowed-endpoints picker, and the warning before a save that
	// replaces the access token.
	b.open(e.admin + "/#/product/1337/users/console-bot/edit")
	b.waitText("Allowed endpoints")
	b.do(chromedp.SendKeys(chromedp.CSS(`fieldset.endpoints input[type=search]`), "get-dev"))
	if n := b.eval(`String(document.querySelectorAll("fieldset.endpoints select")[0].options.length)`); n != "1" {
		t.Errorf("searching the available endpoints for get-dev leaves %s, want 1", n)
	}
	b.eval(`document.querySelectorAll("fieldset.endpoints select")[0].options[0].selected = true; ""`)
	b.click(`//button[normalize-space()='Add →']`)
	b.click(`//button[normalize-space()='Save changes']`)
	b.waitText("Saving replaces the access token")
	b.click(`//dialog//button[normalize-space()='Save and replace the token']`)
	newToken = b.credential("token")
	b.closeCredentials()
	if _, body := e.api(t, "GET", "/v1/products/1337/team/console-bot", nil); fmt.Sprint(body["user"].(map[string]any)["allowed_endpoints"]) != "[get-device]" {
		t.Errorf("allowed endpoints after the picker: %v", body["user"].(map[string]any)["allowed_endpoints"])
	}
	if st, _ := e.gatewayGet(t, "/v1/products/1337/devices", "Bearer "+token); st != 401 {
		t.Errorf("the token replaced by the edit: %d, want 401", st)
	}
	if st, code := e.gatewayGet(t, "/v1/products/1337/devices", "Bearer "+newToken); st != 403 || code != "endpoint_not_allowed" {
		t.Errorf("the new token on an endpoint not picked: %d %s, want 403 endpoint_not_allowed", st, code)
	}
	token = newToken

	// A quota and an allow-list, set in the form: the list is a privilege
	// change (a new token), the quota is enforced from the next request.
	// (Not within a minute of 00:00 UTC, when the daily quota resets.)
	if now := time.Now().UTC(); now.Hour() == 23 && now.Minute() == 59 {
		time.Sleep(time.Until(now.Truncate(time.Minute).Add(time.Minute + time.Second)))
	}
	b.open(e.admin + "/#/product/1337/users/console-bot/edit")
	b.do(chromedp.WaitVisible(chromedp.CSS(`input[name=quota_requests]`)),
		chromedp.SetValue(chromedp.CSS(`input[name=quota_requests]`), "3"),
		chromedp.SetValue(chromedp.CSS(`select[name=quota_period]`), "day"),
		chromedp.SetValue(chromedp.CSS(`input[name=allowed_ips]`), "127.0.0.1, 2001:db8::/32"))
	b.shot("edit-quota")
	b.click(`//button[normalize-space()='Save changes']`)
	b.waitText("Saving replaces the access token")
	b.click(`//dialog//button[normalize-space()='Save and replace the token']`)
	newToken = b.credential("token")
	b.closeCredentials()
	b.waitText("3 per day (UTC)")
	b.waitText("127.0.0.1/32")
	var quotaStatuses []string
	for range 4 {
		st, code := e.gatewayGet(t, "/v1/products/1337/devices/0a1b2c", "Bearer "+newToken)
		quotaStatuses = append(quotaStatuses, fmt.Sprintf("%d %s", st, code))
	}
	if got := strings.Join(quotaStatuses, ","); !strings.HasPrefix(got, "200") || !strings.HasSuffix(got, "429 quota_exceeded") {
		t.Errorf("four requests under a quota of 3 a day: %s, want the last refused with quota_exceeded", got)
	}
	token = newToken

	// Every control has a label; focus is visible; the skip link comes first.
	for _, page := range []string{"/#/product/1337/users/console-bot", "/#/product/1337/users/console-bot/edit", "/#/product/1337", "/#/roles"} {
		b.open(e.admin + page)
		if unlabelled := b.eval(`[...document.querySelectorAll("input, select, textarea, button")].filter(el => !(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !(el.tagName === "BUTTON" && el.textContent.trim())).map(el => el.outerHTML).join("\n")`); unlabelled != "" {
			t.Errorf("%s: controls without a label:\n%s", page, unlabelled)
		}
	}
	b.open(e.admin + "/#/endpoints")
	b.open(e.admin + "/#/")
	b.do(chromedp.WaitVisible(chromedp.CSS("main table a")))
	if got := b.eval(`document.activeElement.tagName + " " + document.activeElement.textContent`); got != "H1 Orgs and products" {
		t.Errorf("after navigating, focus is on %q, want the page's heading", got)
	}
	b.do(chromedp.KeyEvent("\t"))
	if got := b.eval(`document.activeElement.textContent + " / " + getComputedStyle(document.activeElement).outlineStyle`); got != "acme / solid" {
		t.Errorf("Tab from the heading focuses %q, want the first team link with a visible outline", got)
	}
	if got := b.eval(`document.querySelector("a, button, input, select, textarea").className`); got != "skip" {
		t.Errorf("the first focusable element is %q, want the skip link", got)
	}

	// Two tabs on one user: a change in one makes the other's refused (412).
	other := b.tab()
	b.open(e.admin + "/#/product/1337/users/console-bot")
	other.open(e.admin + "/#/product/1337/users/console-bot")
	b.waitText("Change history")
	other.waitText("Change history")
	tokenIDBefore := b.eval(`[...document.querySelectorAll("dl.fields code")][0].textContent`)
	b.click(`//div[@class='actions']/button[normalize-space()='Retire']`)
	b.waitText("console-bot is retired.")
	other.click(`//div[@class='actions']/button[normalize-space()='Rotate token']`)
	other.click(`//dialog//button[normalize-space()='Rotate token']`)
	other.waitText("Someone else changed this API user since you opened this page. Nothing was saved.")
	other.shot("stale-edit")
	if _, body := e.api(t, "GET", "/v1/products/1337/team/console-bot", nil); body["user"].(map[string]any)["token_id"] != tokenIDBefore {
		t.Error("the stale tab's rotation changed the token")
	}
	other.click(`//button[normalize-space()='Reload the user']`)
	other.waitText("retired")

	// The change history shows what the console did, by whom.
	b.open(e.admin + "/#/product/1337/users/console-bot")
	b.waitText("delete key by 127.0.0.1")
	b.waitText("rotate token by 127.0.0.1")

	// "Try a request" agrees with the gateway.
	st, created := e.api(t, "POST", "/v1/products/1337/team", map[string]any{
		"username": "tryer", "friendly_name": "Fleet dashboard", "description": "Reads one demo device for the status page.",
		"scopes":               []string{"devices:list", "devices:get"},
		"resource_constraints": map[string][]string{"device": {"0a1b2c"}},
	})
	if st != 200 {
		t.Fatalf("creating tryer: %d %v", st, created)
	}
	tryToken := created["created"].(map[string]any)["tokens"].([]any)[0].(map[string]any)["token"].(string)
	b.open(e.admin + "/#/product/1337/users/tryer")
	b.waitText("Fleet dashboard (tryer)") // not the previous user's page, which has the same panels
	b.waitText("create user by 127.0.0.1")
	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/v1/products/1337/devices/0a1b2c", "allowed"},
		{"PUT", "/v1/products/1337/devices/0a1b2c", "insufficient_scope"},
		{"GET", "/v1/products/4242/devices/0a1b2c", "tenant_mismatch"},
		{"GET", "/v1/products/1337/devices", "resource_constraint"},
		{"GET", "/v1/products/1337/nowhere", "no_endpoint"},
		{"GET", "/v1/products/my-product-v1/devices/ffffff", "resource_constraint"}, // last: the README's screenshot
	} {
		b.do(
			chromedp.SetValue(chromedp.CSS(`select[name=method]`), tc.method),
			chromedp.SetValue(chromedp.CSS(`input[name=path]`), tc.path),
			chromedp.Evaluate[chromedp.Void](`document.querySelector(".verdict").replaceChildren()`),
		)
		b.click(`//button[normalize-space()='Decide']`)
		b.do(chromedp.WaitVisible(chromedp.CSS(`.verdict [data-reason]`)))
		page := b.eval(`document.querySelector(".verdict [data-reason]").dataset.reason`)
		req, _ := http.NewRequest(tc.method, e.gateway+tc.path, nil)
		req.Header.Set("Authorization", "Bearer "+tryToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var gwBody struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&gwBody)
		resp.Body.Close()
		gw := gwBody.Error
		if resp.StatusCode == 200 {
			gw = "allowed"
		}
		if page != tc.want || gw != tc.want {
			t.Errorf("%s %s: console says %s, gateway says %s; want %s", tc.method, tc.path, page, gw, tc.want)
		}
	}
	b.shot("try-a-request")

	// Roles and the endpoint catalog; a role in use cannot be deleted.
	if st, _ := e.api(t, "PUT", "/v1/roles/auditor", map[string]any{"description": "Reads events", "scopes": []string{"events:get"}}); st != 200 {
		t.Fatalf("creating a role: %d", st)
	}
	if st, _ := e.api(t, "PUT", "/v1/products/1337/team/tryer", map[string]any{"roles": []string{"auditor"}}); st != 200 {
		t.Fatal("giving the role")
	}
	b.open(e.admin + "/#/roles")
	b.waitText("Reads events")
	b.click(`//button[@aria-label='Delete role auditor']`)
	b.click(`//dialog//button[normalize-space()='Delete role']`)
	b.waitText("Role auditor was not deleted")
	b.waitText("tryer")
	b.shot("roles")
	b.open(e.admin + "/#/endpoints")
	b.waitText("devices.function:call")
	b.shot("endpoints")

	// Delete, typing the username to confirm.
	b.open(e.admin + "/#/product/1337/users/console-bot")
	b.waitText("Change history")
	b.click(`//div[@class='actions']/button[normalize-space()='Delete']`)
	if disabled := b.eval(`String(document.querySelector("dialog button.danger").disabled)`); disabled != "true" {
		t.Error("the delete button is enabled before the username is typed")
	}
	b.do(chromedp.SendKeys(chromedp.CSS(`dialog input`), "console-bot"))
	b.click(`//dialog//button[normalize-space()='Delete user']`)
	b.waitText("console-bot was deleted.")
	if st, _ := e.api(t, "GET", "/v1/products/1337/team/console-bot", nil); st != 404 {
		t.Errorf("deleted user: %d, want 404", st)
	}
	if st, _ := e.gatewayGet(t, "/v1/products/1337/devices", "Bearer "+token); st != 401 {
		t.Errorf("deleted user's token: %d, want 401", st)
	}

	// Another site's form post and fetch change nothing.
	evilSite := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		switch r.URL.Path {
		case "/form":
			fmt.Fprintf(w, `<form method="POST" action="%s/v1/products/1337/team" enctype="text/plain"><input name='{"username":"intruder1","friendly_name":"' value='x"}'></form><script>document.forms[0].submit()</script>`, e.admin)
		case "/fetch":
			fmt.Fprintf(w, `<p id="done">sent</p><script>fetch(%q, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: JSON.stringify({username: "intruder2"})}).finally(() => document.title = "sent")</script>`, e.admin+"/v1/products/1337/team")
		}
	}))
	defer evilSite.Close()
	attacker := b.tab()
	attacker.do(chromedp.Navigate(evilSite.URL + "/fetch"))
	// Both waits share one budget of 10s.
	deadline := time.Now().Add(10 * time.Second)
	within(time.Until(deadline), func() bool { return attacker.eval(`document.title`) == "sent" })
	attacker.do(chromedp.Navigate(evilSite.URL + "/form"))
	within(time.Until(deadline), func() bool {
		return strings.Contains(e.log.String(), `intruder1`) || strings.Contains(e.log.String(), "cross_site_request")
	})
	time.Sleep(300 * time.Millisecond)
	for _, name := range []string{"intruder1", "intruder2"} {
		if st, _ := e.api(t, "GET", "/v1/products/1337/team/"+name, nil); st != 404 {
			t.Errorf("a cross-site request created %s: %d", name, st)
		}
	}
	if n := strings.Count(e.log.String(), `"cross_site_request"`); n < 2 {
		t.Errorf("%d cross-site refusals in the server log, want the form's and the fetch's", n)
	}
	t.Logf("screenshots: %s", b.shots)
}

func jsString(s string) string {
	data, _ := json.Marshal(s)
	return string(data)
}
