package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/apiusers/caddy-api-users/internal/testwait"
)

// TestMain removes the binary buildCaddy built, once every test that uses
// it is done.
func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// within and eventually wait for a condition (see testwait).
var (
	within     = testwait.Within
	eventually = testwait.Eventually
)
