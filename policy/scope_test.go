package policy

import (
	"strings"
	"testing"
)

func TestParseScope(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string // substring; "" means valid
	}{
		{"devices:list", ""},
		{"devices:get", ""},
		{"devices.function:call", ""},
		{"devices.variable:get", ""},
		{"events:send", ""},
		{"a.b.c.d:e", ""},
		{"sims_2:read-all", ""},
		{"x9:y9", ""},

		{"", "empty"},
		{"devices", `no ":"`},
		{"devices:", "empty action"},
		{":list", "empty resource"},
		{"devices:list:all", `more than one ":"`},
		{"Devices:list", `"Devices" must begin with a lowercase letter`},
		{"devices:List", `"List" must begin with a lowercase letter`},
		{"devices:lIst", `contains 'I'`},
		{"9devices:list", "must begin with a lowercase letter"},
		{"_devices:list", "must begin with a lowercase letter"},
		{"devices..function:call", "empty resource part"},
		{".devices:list", "empty resource part"},
		{"devices.:list", "empty resource part"},
		{"devices.Function:call", `"Function" must begin`},
		{"devices:*", "must begin with a lowercase letter"},
		{"devices:li st", `contains ' '`},
		{"devices/x:list", `contains '/'`},
		{"dévices:list", "contains"},
		{"devices:list.all", `contains '.'`},
	}
	for _, tt := range tests {
		got, err := ParseScope(tt.in)
		if tt.wantErr == "" {
			if err != nil || got != Scope(tt.in) {
				t.Errorf("ParseScope(%q) = %q, %v; want %q, nil", tt.in, got, err, tt.in)
			}
			continue
		}
		if err == nil {
			t.Errorf("ParseScope(%q) = %q, nil; want an error containing %q", tt.in, got, tt.wantErr)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tt.wantErr) {
			t.Errorf("ParseScope(%q) error %q; want it to contain %q", tt.in, msg, tt.wantErr)
		}
		if tt.in != "" && !strings.Contains(msg, `"devices:list"`) {
			t.Errorf("ParseScope(%q) error %q does not show a valid scope", tt.in, msg)
		}
		if msg[0] >= 'A' && msg[0] <= 'Z' {
			t.Errorf("ParseScope(%q) error %q is not lowercase", tt.in, msg)
		}
	}
}

func TestParseScopes(t *testing.T) {
	tests := []struct {
		in      []string
		want    []Scope
		wantErr string
	}{
		{nil, nil, ""},
		{[]string{}, nil, ""},
		{[]string{"devices:list", "events:send"}, []Scope{"devices:list", "events:send"}, ""},
		{[]string{"devices:list", "Events:send", "x"}, nil, `scope 2 of 3: scope "Events:send"`},
		{[]string{""}, nil, "scope 1 of 1: scope is empty"},
	}
	for _, tt := range tests {
		got, err := ParseScopes(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseScopes(%q) error %v; want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseScopes(%q): %v", tt.in, err)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("ParseScopes(%q) = %q; want %q", tt.in, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("ParseScopes(%q) = %q; want %q", tt.in, got, tt.want)
				break
			}
		}
	}
}
