package policy

import (
	"encoding/base64"
	"testing"
	"time"
)

const benchPath = "/v1/products/my-product-v1/devices/0a1b2c3d"

// BenchmarkDecide is the whole decision for a cached product user after
// authentication: the performance target is under 1 µs with no allocation.
func BenchmarkDecide(b *testing.B) {
	c := exampleCatalog(b)
	tn := exampleTenancy(b)
	u := productUser()
	u.AllowedEndpoints = []string{"list-devices", "get-device", "get-variable"}
	u.IdleTimeout = 720 * time.Hour
	p := Compile(u, nil)
	req := &Request{Method: "GET", Path: benchPath}
	now := t0.Add(time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if d := Decide(req, p, c, tn, now, now); !d.Allowed() {
			b.Fatal(d.Reason)
		}
	}
}

func BenchmarkCatalogMatch(b *testing.B) {
	c := exampleCatalog(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := c.Match("GET", benchPath); !ok {
			b.Fatal("no match")
		}
	}
}

func BenchmarkCheckPath(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if CheckPath(benchPath) != Allowed {
			b.Fatal("refused")
		}
	}
}

func BenchmarkAuthorize(b *testing.B) {
	c := exampleCatalog(b)
	tn := exampleTenancy(b)
	u := productUser()
	u.AllowedEndpoints = []string{"list-devices", "get-device", "get-variable"}
	p := Compile(u, nil)
	ep, vars, _ := c.Match("GET", benchPath)
	b.ReportAllocs()
	for b.Loop() {
		if r := p.Authorize(ep, &vars, tn); r != Allowed {
			b.Fatal(r)
		}
	}
}

// The BenchmarkLayer_ benchmarks measure one step of the gateway's decision
// path each, so a regression in the whole handler can be traced to a step.
// Decide, CatalogMatch, CheckPath and Authorize above are layers too.

// Results are kept in these, so the compiler cannot drop the work or keep
// on the stack what the gateway keeps on the heap.
var (
	sinkCredential Credential
	sinkHash       Hash
	sinkString     string
	sinkBool       bool
)

// benchCredentials returns a valid token, and a Basic header value with a
// valid user ID, key and secret, with the user that holds them.
func benchCredentials() (token, basic string, u *APIUser) {
	token, th := NewToken()
	secret, sh := NewSecret()
	key, k := NewKey(t0)
	u = productUser()
	u.TokenHash, u.SecretHash, u.Keys = th, sh, []Key{k}
	basic = "Basic " + base64.StdEncoding.EncodeToString([]byte(u.ID+":"+key+":"+secret))
	return "Bearer " + token, basic, u
}

func BenchmarkLayer_CredentialParse(b *testing.B) {
	bearer, basic, _ := benchCredentials()
	for _, c := range []struct {
		name, header string
		kind         CredentialKind
	}{
		{"bearer", bearer, BearerToken},
		{"key+secret", basic, KeyAndSecret},
	} {
		b.Run(c.name, func(b *testing.B) {
			if cred, r := ParseAuthorization(c.header); r != Allowed || cred.Kind != c.kind {
				b.Fatalf("ParseAuthorization(%q) = %v, %s", c.header, cred.Kind, r)
			}
			b.ReportAllocs()
			for b.Loop() {
				sinkCredential, _ = ParseAuthorization(c.header)
			}
		})
	}
}

// BenchmarkLayer_TokenHash is what the gateway does with a parsed bearer
// token before the cache lookup: hash it, and name it for the audit log.
func BenchmarkLayer_TokenHash(b *testing.B) {
	bearer, _, u := benchCredentials()
	token := bearer[len("Bearer "):]
	if !VerifyToken(u, HashOf(token)) {
		b.Fatal("the token's hash is not the user's")
	}
	b.Run("hash", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sinkHash = HashOf(token)
		}
	})
	b.Run("hash+public-id", func(b *testing.B) {
		if id := TokenIDOf(HashOf(token)); len(id) != len("at_")+12 {
			b.Fatalf("token ID %q", id)
		}
		b.ReportAllocs()
		for b.Loop() {
			// Kept, as the gateway keeps it for the audit record.
			sinkString = TokenIDOf(HashOf(token))
		}
	})
	b.Run("verify", func(b *testing.B) {
		h := HashOf(token)
		b.ReportAllocs()
		for b.Loop() {
			sinkBool = VerifyToken(u, h)
		}
	})
}

// BenchmarkLayer_VerifyKeyAndSecret is the key-and-secret check after the
// user is found: two SHA-256 hashes and two constant-time comparisons.
func BenchmarkLayer_VerifyKeyAndSecret(b *testing.B) {
	_, basic, u := benchCredentials()
	cred, _ := ParseAuthorization(basic)
	now := t0.Add(time.Hour)
	if _, ok := VerifyKeyAndSecret(u, cred.Key, cred.Secret, now); !ok {
		b.Fatal("the key and secret do not verify")
	}
	b.ReportAllocs()
	for b.Loop() {
		sinkString, sinkBool = VerifyKeyAndSecret(u, cred.Key, cred.Secret, now)
	}
}
