package caddymodule

import (
	"os"
	"testing"
)

// TestMain keeps Caddy's data and config directories (certificates,
// autosaves, the default store) inside a temporary directory, so tests
// never touch the developer's own.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "api-users-test-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_DATA_HOME", dir+"/data")
	os.Setenv("XDG_CONFIG_HOME", dir+"/config")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
