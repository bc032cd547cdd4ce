package caddymodule

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestStripScannedStripsWhatStripDoes: the gateway strips with the hint
// its header scan gives (stripScanned); on every request, in every
// spelling of every identity header, map key canonical or not, it must
// leave exactly what the full walk (strip) leaves.
func TestStripScannedStripsWhatStripDoes(t *testing.T) {
	names := []string{
		"Authorization", "authorization", "AUTHORIZATION", "Authorization_",
		"X-Api-User", "x-api-user", "X_Api_User", "X-API-USER", "X-Api-User-Org", "x_api_user_org",
		"X-Api-User-Product", "X-Acting-User", "x_acting_user", "X-Proxied-User", "X_PROXIED_USER",
		"Acting-User", "On-Behalf-Of", "on_behalf_of", "ON-BEHALF-OF",
		"X-Api-Users", "X-Api-Use", "Accept", "User-Agent", "X-Request-Id", "A", "X",
	}
	connection := []string{"", "keep-alive", "X-Api-User", "keep-alive, x_acting_user", "On-Behalf-Of"}
	for _, proxied := range []string{"", "On-Behalf-Of"} {
		hr := newHeaderRules(proxied)
		for i := range names {
			for j := range names {
				for _, conn := range connection {
					for _, keep := range []bool{false, true} {
						h := http.Header{names[i]: {"1"}, names[j]: {"2"}, "Accept": {"*/*"}}
						if conn != "" {
							h["Connection"] = []string{conn}
							h["Trailer"] = []string{conn}
						}
						full, hinted := h.Clone(), h.Clone()
						hr.strip(full, keep)
						scanned := hr.scan(hinted)
						hr.stripScanned(hinted, keep, &scanned)
						if !reflect.DeepEqual(full, hinted) {
							t.Fatalf("proxied header %q, keep Authorization %v, request %v:\nstrip left        %v\nstripScanned left %v", proxied, keep, h, full, hinted)
						}
					}
				}
			}
		}
	}
	// And the hint is not always "walk": the common request takes the
	// short path.
	hr := newHeaderRules("")
	h := http.Header{"Authorization": {"Bearer x"}, "Accept": {"*/*"}, "User-Agent": {"curl"}, "X-Request-Id": {"1"}}
	if scanned := hr.scan(h); scanned.identity {
		t.Errorf("scan found an identity header in %v", h)
	}
	if scanned := hr.scan(http.Header{strings.ToLower(HeaderActingUser): {"x"}}); !scanned.identity {
		t.Error("scan missed a lower-case X-Acting-User")
	}
}
