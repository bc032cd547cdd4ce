package storetest

import (
	"reflect"
	"strings"
	"testing"
)

// TestForgottenColumnFails shows that the round trip catches a driver that
// forgets any one field of a user: FullUser sets every field, and a user
// read back with that field zero (what a driver that neither writes nor
// reads its column returns) differs from it in exactly that field. So a
// field added to policy.APIUser and to FullUser, but not to a driver's
// columns, fails the suite for that driver.
func TestForgottenColumnFails(t *testing.T) {
	full := FullUser("forgetful")
	if zero := zeroFields(full); len(zero) > 0 {
		t.Fatalf("FullUser leaves %v zero", zero)
	}
	v := reflect.ValueOf(full).Elem()
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		if name == "Version" {
			continue // the store sets it; the round trip checks it is 1
		}
		forgot := full.Clone()
		f := reflect.ValueOf(forgot).Elem().Field(i)
		f.Set(reflect.Zero(f.Type()))
		diffs := diffUser(forgot, full)
		if len(diffs) != 1 || !strings.Contains(diffs[0], " "+name+" = ") {
			t.Errorf("a driver that forgets %s: the round trip reports %q, want one difference in %s", name, diffs, name)
		}
	}
	// And a field the suite does not set would be caught before that.
	partial := FullUser("partial")
	partial.Description = ""
	if zero := zeroFields(partial); len(zero) != 1 || zero[0] != "Description" {
		t.Errorf("zeroFields = %v, want [Description]", zero)
	}
}
