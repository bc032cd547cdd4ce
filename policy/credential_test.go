package policy

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func TestNewCredentialsAreRandomPrefixedAndHashed(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		tok, th := NewToken()
		sec, sh := NewSecret()
		key, k := NewKey(time.Unix(0, 0))
		for _, v := range []string{tok, sec, key} {
			if seen[v] {
				t.Fatalf("credential value repeated: %s", v)
			}
			seen[v] = true
		}
		if !strings.HasPrefix(tok, TokenPrefix) || !strings.HasPrefix(sec, SecretPrefix) || !strings.HasPrefix(key, KeyPrefix) {
			t.Fatalf("missing prefix: %s %s %s", tok, sec, key)
		}
		if th != HashOf(tok) || sh != HashOf(sec) || k.Hash != HashOf(key) {
			t.Fatal("returned hash is not the SHA-256 of the value")
		}
		if id, ok := KeyIDOf(key); !ok || id != k.ID || !ValidKeyID(id) {
			t.Fatalf("KeyIDOf(%q) = %q, %v; want %q", key, id, ok, k.ID)
		}
		// At least 128 random bits: 48 hex digits carry 192.
		if n := len(tok) - len(TokenPrefix); n*4 < 128 {
			t.Fatalf("token carries %d bits", n*4)
		}
	}
}

func TestParseAuthorization(t *testing.T) {
	tok, _ := NewToken()
	sec, _ := NewSecret()
	key, _ := NewKey(time.Now())
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name   string
		header string
		kind   CredentialKind
		reason Reason
	}{
		{"empty", "", NoCredential, MissingCredentials},
		{"bearer", "Bearer " + tok, BearerToken, Allowed},
		{"bearer lowercase scheme", "bearer " + tok, BearerToken, Allowed},
		{"bearer of another issuer", "Bearer eyJhbGciOi.x.y", NoCredential, MissingCredentials},
		{"bearer truncated", "Bearer " + tok[:len(tok)-1], NoCredential, MalformedCredentials},
		{"bearer uppercase hex", "Bearer " + strings.ToUpper(tok[:0]) + TokenPrefix + strings.ToUpper(tok[len(TokenPrefix):]), NoCredential, MalformedCredentials},
		{"bearer with trailing data", "Bearer " + tok + "x", NoCredential, MalformedCredentials},
		{"basic", "Basic " + b64("app-1:"+key+":"+sec), KeyAndSecret, Allowed},
		{"basic of another issuer", "Basic " + b64("alice:hunter2"), NoCredential, MissingCredentials},
		{"basic without secret", "Basic " + b64("app-1:"+key), NoCredential, MalformedCredentials},
		{"basic with bad user ID", "Basic " + b64("a b:"+key+":"+sec), NoCredential, MalformedCredentials},
		{"basic with bad secret", "Basic " + b64("app-1:"+key+":nope"), NoCredential, MalformedCredentials},
		{"basic with extra field", "Basic " + b64("app-1:"+key+":"+sec+":x"), NoCredential, MalformedCredentials},
		{"basic not base64", "Basic !!!", NoCredential, MalformedCredentials},
		{"oversized", "Bearer " + strings.Repeat("a", MaxAuthorizationLen), NoCredential, MalformedCredentials},
		{"no scheme", tok, NoCredential, MalformedCredentials}, // ours, so decided: never passed through
		{"digest", "Digest username=x", NoCredential, MissingCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, r := ParseAuthorization(tt.header)
			if c.Kind != tt.kind || r != tt.reason {
				t.Fatalf("got kind %d reason %s, want kind %d reason %s", c.Kind, r, tt.kind, tt.reason)
			}
		})
	}
}

func TestVerifyKeyAndSecret(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	sec, sh := NewSecret()
	keyA, kA := NewKey(now)
	keyB, kB := NewKey(now)
	kB.ExpiresAt = now.Add(time.Hour)
	u := &APIUser{ID: "app-1", SecretHash: sh, Keys: []Key{kA, kB}}
	otherSec, _ := NewSecret()
	otherKey, _ := NewKey(now)
	// A key whose ID is the user's but whose random part differs.
	forged := keyA[:len(KeyPrefix)+keyIDHexLen+1] + strings.Repeat("0", randomHexLen)

	tests := []struct {
		name        string
		u           *APIUser
		key, secret string
		at          time.Time
		wantID      string
	}{
		{"key A", u, keyA, sec, now, kA.ID},
		{"key B inside its window", u, keyB, sec, now.Add(59 * time.Minute), kB.ID},
		{"key B after its window", u, keyB, sec, now.Add(time.Hour), ""},
		{"wrong secret", u, keyA, otherSec, now, ""},
		{"unknown key", u, otherKey, sec, now, ""},
		{"forged key with a known ID", u, forged, sec, now, ""},
		{"unknown user", nil, keyA, sec, now, ""},
		{"user without secret", &APIUser{ID: "x", Keys: []Key{kA}}, keyA, sec, now, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, ok := VerifyKeyAndSecret(tt.u, tt.key, tt.secret, tt.at)
			if ok != (tt.wantID != "") || id != tt.wantID {
				t.Fatalf("got %q, %v; want %q", id, ok, tt.wantID)
			}
		})
	}
}

func TestVerifyToken(t *testing.T) {
	tok, h := NewToken()
	other, _ := NewToken()
	u := &APIUser{TokenHash: h}
	if !VerifyToken(u, HashOf(tok)) {
		t.Fatal("current token refused")
	}
	if VerifyToken(u, HashOf(other)) {
		t.Fatal("other token accepted")
	}
	if VerifyToken(&APIUser{}, HashOf(tok)) || VerifyToken(nil, HashOf(tok)) {
		t.Fatal("token accepted for a user without one")
	}
	c := Credential{Kind: BearerToken, Token: tok}
	if id := c.PublicID(); id != TokenIDOf(h) || strings.Contains(tok, id[3:]) {
		t.Fatalf("public ID %q reveals or mismatches the token", id)
	}
}

func TestReasonsHaveStableCodesAndStatuses(t *testing.T) {
	codes := map[string]bool{}
	for _, r := range Reasons() {
		if r.Code() == "" || r.Description() == "" || r.Status() < 200 {
			t.Fatalf("reason %d lacks a code, description or status", r)
		}
		if codes[r.Code()] {
			t.Fatalf("code %q used twice", r.Code())
		}
		codes[r.Code()] = true
	}
	if InsufficientScope.Code() != "insufficient_scope" || InsufficientScope.Status() != 403 {
		t.Fatal("insufficient_scope changed")
	}
	if LockedOut.Status() != 429 || AmbiguousPath.Status() != 400 || InvalidCredentials.Status() != 401 {
		t.Fatal("statuses changed")
	}
}

func TestCarriesCredential(t *testing.T) {
	tok, _ := NewToken()
	sec, _ := NewSecret()
	key, _ := NewKey(time.Now())
	carries := []string{
		tok, sec, key,
		"access_token=" + tok,
		"x=1&access_token=" + tok + "&y=2",
		"APIU_AT_" + tok[len(TokenPrefix):],
		"Apiu_Key_x",
		"%61piu%5Fat%5F" + tok[len(TokenPrefix):],   // escaped once
		"apiu%255Fat%255F" + tok[len(TokenPrefix):], // escaped twice
		"apiu%5Fsk%5Fx%zz",                          // a broken escape after it
		"%zz&t=apiu%5Fat%5Fx",                       // a broken escape before it
		"session=" + sec + "; other=1",
		"Token " + tok,
		"Basic " + base64.StdEncoding.EncodeToString([]byte("id:"+sec)),
		"Bearer\t" + tok,
	}
	for _, s := range carries {
		if !CarriesCredential(s) {
			t.Errorf("CarriesCredential(%q) = false", s)
		}
	}
	clean := []string{
		"", "apiu", "apiu_", "apiu_x", "apiu_ak_", "api_at_", "xapiu at_", "Mozilla/5.0 (X11; Linux x86_64)",
		"a_b_c_d", "%zz", "Basic " + base64.StdEncoding.EncodeToString([]byte("user:password")),
		"apiu%2Fat_", // an escaped slash, not an underscore
	}
	for _, s := range clean {
		if CarriesCredential(s) {
			t.Errorf("CarriesCredential(%q) = true", s)
		}
	}
}

func TestParseAuthorizationOwnsEveryCredentialPrefix(t *testing.T) {
	tok, _ := NewToken()
	sec, _ := NewSecret()
	key, _ := NewKey(time.Now())
	for _, h := range []string{
		"Token " + tok, "Bearer\t" + tok, tok, "Bearer Bearer " + tok, "Bearer " + sec, "Bearer " + key,
		"Bearer " + strings.ToUpper(tok), "Digest token=" + tok, "ApiKey " + key,
		"Basic " + base64.StdEncoding.EncodeToString([]byte("id:"+sec+":"+key)),
		"Basic " + base64.StdEncoding.EncodeToString([]byte("id:password"+tok)),
	} {
		if _, reason := ParseAuthorization(h); reason != MalformedCredentials {
			t.Errorf("ParseAuthorization(%q) = %v, want malformed_credentials", h, reason)
		}
	}
	for _, h := range []string{"Digest username=\"x\"", "Bearer eyJhbGciOi", "Basic " + base64.StdEncoding.EncodeToString([]byte("user:pass"))} {
		if _, reason := ParseAuthorization(h); reason != MissingCredentials {
			t.Errorf("ParseAuthorization(%q) = %v, want missing_credentials", h, reason)
		}
	}
}

func TestRedactCredentials(t *testing.T) {
	tok, _ := NewToken()
	for in, want := range map[string]string{
		"/v1/devices":                           "/v1/devices",
		"/v1/devices/" + tok + "/x":             "/v1/devices/apiu_REDACTED/x",
		"/a/" + strings.ToUpper(tok):            "/a/apiu_REDACTED",
		"/a/" + tok + "/b/" + tok:               "/a/apiu_REDACTED/b/apiu_REDACTED",
		"/a/%61piu_at_" + tok[len("apiu_at_"):]: "(redacted: the request carried an API-user credential)",
	} {
		if got := RedactCredentials(in); got != want {
			t.Errorf("RedactCredentials(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(RedactCredentials(in), tok[len("apiu_at_"):]) {
			t.Errorf("RedactCredentials(%q) kept the token", in)
		}
	}
}
