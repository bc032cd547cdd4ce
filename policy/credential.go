package policy

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"time"
)

// Credential values are random, carry a recognisable prefix so secret
// scanners can find leaked ones, and are stored only as SHA-256 hashes. They
// are 192-bit random values, not passwords, so a slow hash such as bcrypt
// would only burn CPU: nobody can guess a preimage of a 192-bit secret.
const (
	TokenPrefix  = "apiu_at_"
	SecretPrefix = "apiu_sk_"
	KeyPrefix    = "apiu_key_"

	randomHexLen = 48 // 24 random bytes, 192 bits
	keyIDHexLen  = 16 // 8 random bytes: the public part of a key

	tokenLen  = len(TokenPrefix) + randomHexLen
	secretLen = len(SecretPrefix) + randomHexLen
	keyLen    = len(KeyPrefix) + keyIDHexLen + 1 + randomHexLen

	// MaxAuthorizationLen bounds the Authorization header we even look at;
	// a longer one is malformed.
	MaxAuthorizationLen = 512
)

// CredentialKind says which API-user credential a request presented.
type CredentialKind uint8

const (
	// NoCredential: no Authorization header, or one that is not an API-user
	// credential (another scheme, or a bearer token without our prefix).
	NoCredential CredentialKind = iota
	// BearerToken: Authorization: Bearer <access token>.
	BearerToken
	// KeyAndSecret: Authorization: Basic base64(<user id>:<key>:<secret>).
	KeyAndSecret
)

// Credential is what a request presented. Its values must never be logged;
// use PublicID.
type Credential struct {
	Kind   CredentialKind
	Token  string
	UserID string
	Key    string
	Secret string
}

// ParseAuthorization reads an Authorization header value. It returns
// MissingCredentials when there is no API-user credential at all (so that a
// pass-through mode can tell "someone else's token" from "a broken one of
// ours"), MalformedCredentials when the header claims to be ours but is not
// well formed, and Allowed otherwise. A value that carries an API-user
// credential's prefix anywhere, in any letter case (CarriesCredential), is
// ours: if it is not one well-formed credential in one of the two schemes
// (a token without a scheme, after a tab, under another scheme, a Secret
// or Key as a bearer token), it is malformed, never someone else's, so it
// is never passed through to a backend with the credential in it. It does
// not allocate for bearer tokens.
func ParseAuthorization(h string) (Credential, Reason) {
	c, reason := parseAuthorization(h)
	if reason == MissingCredentials && CarriesCredential(h) {
		return Credential{}, MalformedCredentials
	}
	return c, reason
}

func parseAuthorization(h string) (Credential, Reason) {
	if h == "" {
		return Credential{}, MissingCredentials
	}
	if len(h) > MaxAuthorizationLen {
		return Credential{}, MalformedCredentials
	}
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok {
		return Credential{}, MissingCredentials
	}
	rest = strings.TrimLeft(rest, " ")
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		if !strings.HasPrefix(rest, TokenPrefix) {
			return Credential{}, MissingCredentials
		}
		if !wellFormed(rest, TokenPrefix, tokenLen) {
			return Credential{}, MalformedCredentials
		}
		return Credential{Kind: BearerToken, Token: rest}, Allowed
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return Credential{}, MalformedCredentials
		}
		id, keyAndSecret, _ := strings.Cut(string(raw), ":")
		if !strings.HasPrefix(keyAndSecret, KeyPrefix) {
			if CarriesCredential(string(raw)) {
				// A Secret or a Key in another place than id:key:secret.
				return Credential{}, MalformedCredentials
			}
			// A plain user:password pair is someone else's credential.
			return Credential{}, MissingCredentials
		}
		key, secret, ok := strings.Cut(keyAndSecret, ":")
		if !ok || !ValidUserID(id) || !wellFormedKey(key) || !wellFormed(secret, SecretPrefix, secretLen) {
			return Credential{}, MalformedCredentials
		}
		return Credential{Kind: KeyAndSecret, UserID: id, Key: key, Secret: secret}, Allowed
	}
	return Credential{}, MissingCredentials
}

// CarriesCredential reports whether s holds the prefix of an API-user
// credential (TokenPrefix, SecretPrefix or KeyPrefix) in any letter case,
// as sent or once percent-decoded (up to three times, leniently: a broken
// escape is left as it is, as most decoders do). The gateway refuses a
// request that carries one anywhere but in Authorization, so that a
// credential in a query string, a path, a cookie or another header is
// neither forwarded to the backend nor written to a log: "?access_token=",
// "%61piu%5Fat%5F" and "APIU_AT_" are all caught. Hex case does not
// protect a token, so neither may prefix case. Base64 in headers other than
// Authorization is not decoded, except the Basic scheme's. It does not
// allocate unless s holds a percent sign.
func CarriesCredential(s string) bool {
	if carriesPrefix(s) {
		return true
	}
	for i := 0; i < 3 && strings.IndexByte(s, '%') >= 0; i++ {
		dec := percentDecode(s)
		if dec == s {
			break
		}
		if carriesPrefix(dec) {
			return true
		}
		s = dec
	}
	if hasFoldPrefix(s, "basic ") {
		if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s[len("basic "):])); err == nil {
			return carriesPrefix(string(raw))
		}
	}
	return false
}

// carriesPrefix is CarriesCredential without decoding. The three prefixes
// share "apiu_", so it looks at each "_" and the four bytes before it.
func carriesPrefix(s string) bool {
	for off := 0; ; {
		j := strings.IndexByte(s[off:], '_')
		if j < 0 {
			return false
		}
		j += off
		if j >= 4 && strings.EqualFold(s[j-4:j], "apiu") && kindAfterPrefix(s[j+1:]) {
			return true
		}
		off = j + 1
	}
}

func hasFoldPrefix(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// percentDecode decodes every well-formed %XX escape of s and keeps every
// other byte, a broken escape included.
func percentDecode(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			h, ok1 := hexDigit(s[i+1])
			l, ok2 := hexDigit(s[i+2])
			if ok1 && ok2 {
				b = append(b, h<<4|l)
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return string(b)
}

// RedactCredentials replaces what follows each credential prefix in s, up
// to the next "/", "&", ";", "," or blank, with "REDACTED", so that a
// refused request that carried a credential in its path can be logged.
func RedactCredentials(s string) string {
	if !CarriesCredential(s) {
		return s
	}
	if strings.IndexByte(s, '%') >= 0 {
		// The prefix was escaped: no cut would be exact.
		return "(redacted: the request carried an API-user credential)"
	}
	var b strings.Builder
	for {
		i := prefixIndex(s)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		end := strings.IndexAny(s[i:], "/&;, \t")
		if end < 0 {
			end = len(s) - i
		}
		b.WriteString(s[:i])
		b.WriteString("apiu_REDACTED")
		s = s[i+end:]
	}
}

// prefixIndex is the index of the first credential prefix in s, or -1.
func prefixIndex(s string) int {
	for i := 0; i+len("apiu_") <= len(s); i++ {
		if hasFoldPrefix(s[i:], "apiu_") && kindAfterPrefix(s[i+len("apiu_"):]) {
			return i
		}
	}
	return -1
}

// kindAfterPrefix reports whether s, what follows "apiu_", begins with the
// kind of a credential: "at_", "sk_" or "key_", in any case.
func kindAfterPrefix(s string) bool {
	return hasFoldPrefix(s, "at_") || hasFoldPrefix(s, "sk_") || hasFoldPrefix(s, "key_")
}

// PublicID names the credential in logs and audit records without revealing
// it: the token's ID (derived from its hash) or the key's ID.
func (c *Credential) PublicID() string {
	switch c.Kind {
	case BearerToken:
		return TokenIDOf(HashOf(c.Token))
	case KeyAndSecret:
		id, _ := KeyIDOf(c.Key)
		return id
	}
	return ""
}

// HashOf returns the SHA-256 of a credential value.
func HashOf(value string) Hash {
	// Copying into a stack buffer saves the heap allocation that
	// []byte(value) costs for a string longer than 32 bytes, which every
	// credential is; longer values than the buffer are refused by the
	// parser long before they are hashed, but still hash correctly.
	var buf [128]byte
	if len(value) <= len(buf) {
		n := copy(buf[:], value)
		return sha256.Sum256(buf[:n])
	}
	return sha256.Sum256([]byte(value))
}

// TokenIDOf is the public ID of a token: a short prefix of its hash, enough
// to tell tokens apart in a log, useless for guessing the token.
func TokenIDOf(h Hash) string { return "at_" + hex.EncodeToString(h[:6]) }

// NewToken makes a fresh access token. It returns the value, to be shown to
// the client exactly once, and its hash, the only thing stored.
func NewToken() (value string, h Hash) {
	value = TokenPrefix + randomHex(randomHexLen/2)
	return value, HashOf(value)
}

// NewSecret makes a fresh Secret; the value is shown once, the hash stored.
func NewSecret() (value string, h Hash) {
	value = SecretPrefix + randomHex(randomHexLen/2)
	return value, HashOf(value)
}

// NewKey makes a fresh Key. The key's public ID is embedded in its value, so
// a presented key is found among the user's keys without a search by hash.
func NewKey(now time.Time) (value string, k Key) {
	id := randomHex(keyIDHexLen / 2)
	value = KeyPrefix + id + "_" + randomHex(randomHexLen/2)
	return value, Key{ID: id, Hash: HashOf(value), CreatedAt: now}
}

// KeyIDOf extracts the public ID from a key value.
func KeyIDOf(value string) (string, bool) {
	if !wellFormedKey(value) {
		return "", false
	}
	return value[len(KeyPrefix) : len(KeyPrefix)+keyIDHexLen], true
}

// ValidKeyID reports whether s has the syntax of a key's public ID.
func ValidKeyID(s string) bool { return len(s) == keyIDHexLen && isLowerHex(s) }

// dummyHash is compared when the user or key is unknown, so that an unknown
// user costs what a known one costs and timing does not say who exists.
var dummyHash = HashOf("apiu_dummy_credential_for_constant_time")

// VerifyKeyAndSecret checks a presented key and secret against a user in
// constant time with respect to the values. It returns the matched key's ID.
// A nil user (unknown ID) does the same work and fails.
func VerifyKeyAndSecret(u *APIUser, key, secret string, now time.Time) (string, bool) {
	secretHash, keyHash := HashOf(secret), HashOf(key)
	keyID, _ := KeyIDOf(key)
	wantSecret, wantKey := dummyHash, dummyHash
	var found *Key
	if u != nil {
		wantSecret = u.SecretHash
		for i := range u.Keys {
			if u.Keys[i].ID == keyID {
				found = &u.Keys[i]
				wantKey = found.Hash
			}
		}
	}
	secretOK := subtle.ConstantTimeCompare(secretHash[:], wantSecret[:])
	keyOK := subtle.ConstantTimeCompare(keyHash[:], wantKey[:])
	if secretOK&keyOK != 1 || u == nil || found == nil || u.SecretHash.IsZero() {
		return "", false
	}
	if !found.ExpiresAt.IsZero() && !now.Before(found.ExpiresAt) {
		return "", false
	}
	return found.ID, true
}

// VerifyToken checks a presented token's hash against the user's current
// token in constant time.
func VerifyToken(u *APIUser, h Hash) bool {
	if u == nil || u.TokenHash.IsZero() {
		subtle.ConstantTimeCompare(h[:], dummyHash[:])
		return false
	}
	return subtle.ConstantTimeCompare(h[:], u.TokenHash[:]) == 1
}

func wellFormed(v, prefix string, n int) bool {
	return len(v) == n && strings.HasPrefix(v, prefix) && isLowerHex(v[len(prefix):])
}

func wellFormedKey(v string) bool {
	if len(v) != keyLen || !strings.HasPrefix(v, KeyPrefix) {
		return false
	}
	rest := v[len(KeyPrefix):]
	return rest[keyIDHexLen] == '_' && isLowerHex(rest[:keyIDHexLen]) && isLowerHex(rest[keyIDHexLen+1:])
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func randomHex(n int) string {
	b := make([]byte, n)
	// crypto/rand.Read never returns an error on supported platforms and
	// crashes the program if the system's randomness fails.
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
