package main

import (
	"os"
	"path/filepath"
	"testing"
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
